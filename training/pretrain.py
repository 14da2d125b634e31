"""Self-supervised pretraining of any hf_vssl method.

    accelerate launch training/pretrain.py --config training/configs/mlfo_r3d18_k400.yaml \
        --train_dir /data/k400-shards --output_dir runs/mlfo-k400 [--key value ...]

Every key of the YAML file can be overridden on the command line (`--model.graph_start_epoch 10`); see
`hf_vssl/train/arguments.py` for the full list.
"""

from hf_vssl.train.pretrain import main

if __name__ == "__main__":
    main()
