#!/usr/bin/env python3
"""Print what decoding a trained system needs, from its ``config.yaml``.

    local/subnets.py exp/asr_K/config.yaml subnets   # 12-2048-8bit ... ('' for a stock model)
    local/subnets.py exp/asr_K/config.yaml model     # valid.acc_mean.ave.pth
"""

import sys

import yaml

from espnet_allinone.subnet import SubnetSpace


def main(config: str, what: str) -> str:
    conf = yaml.safe_load(open(config))
    if what == "model":  # the averaged checkpoint of ESPnet's first best-model criterion
        phase, key, _ = conf["best_model_criterion"][0]
        return f"{phase}.{key}.ave.pth"
    if what == "subnets":
        if conf["encoder"] != "allinone_conformer":
            return ""
        return " ".join(SubnetSpace.from_encoder_conf(conf["encoder_conf"]).names)
    raise ValueError(f"unknown query {what!r}: use subnets|model")


if __name__ == "__main__":
    print(main(*sys.argv[1:]))
