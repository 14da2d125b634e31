"""Evaluate a pretrained encoder: linear probe, kNN and retrieval Recall@{1,5,10,20,50}.

    python training/evaluate.py --model_name_or_path runs/mlfo/final --train_dir data/train \
        --validation_dir data/validation --protocols linear_probe knn retrieval --output_json results.json
"""

from hf_vssl.train.evaluate import main

if __name__ == "__main__":
    main()
