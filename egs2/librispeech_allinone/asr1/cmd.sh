# Job runners for asr.sh (see ESPnet's egs2/TEMPLATE/asr1/cmd.sh for slurm/SGE).
export train_cmd="run.pl"
export cuda_cmd="run.pl"
export decode_cmd="run.pl"
