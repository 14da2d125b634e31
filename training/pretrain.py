"""Self-supervised pretraining of any hf_vssl method.

    accelerate launch training/pretrain.py --config mlfo_r3d18_k400 \
        --train_dir /data/k400-shards --output_dir runs/mlfo-k400 [--key value ...]

The same as the console command `hf-vssl-pretrain` of a regular install. `--config` names a packaged config
(`hf_vssl/configs/*.yaml`) or any YAML file; every key of it can be overridden on the command line
(`--model.graph_start_epoch 10`); `--help` lists every option.
"""

from hf_vssl.train.pretrain import main

if __name__ == "__main__":
    main()
