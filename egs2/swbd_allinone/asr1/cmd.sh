# shellcheck shell=bash
# How asr.sh runs its jobs (ESPnet's cmd.sh convention): run.pl = this machine;
# slurm.pl / queue.pl (with conf/slurm.conf, conf/queue.conf) for a cluster.
cmd_backend=local
if [ "${cmd_backend}" = local ]; then
    export train_cmd="run.pl"
    export cuda_cmd="run.pl"
    export decode_cmd="run.pl"
elif [ "${cmd_backend}" = slurm ]; then
    export train_cmd="slurm.pl"
    export cuda_cmd="slurm.pl"
    export decode_cmd="slurm.pl"
else
    echo "$0: unknown cmd_backend=${cmd_backend}" >&2
    return 1
fi
