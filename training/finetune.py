"""Fine-tune a pretrained encoder and test it with multiple clips and crops (CoCLR protocol).

    accelerate launch training/finetune.py --model_name_or_path runs/mlfo/final --train_dir data/train \
        --validation_dir data/test --output_dir runs/mlfo-ft
"""

from hf_vssl.train.finetune import main

if __name__ == "__main__":
    main()
