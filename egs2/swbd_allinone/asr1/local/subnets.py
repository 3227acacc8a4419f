#!/usr/bin/env python3
"""Print what decoding a trained system needs, from its ``config.yaml``.

    local/subnets.py exp/asr_K/config.yaml subnets   # 12-2048-8bit ... ('' for a stock model)
    local/subnets.py exp/asr_K/config.yaml model     # valid.acc_mean.ave.pth
    local/subnets.py exp/asr_baseline/config.yaml arch   # 12-2048-32bit (--baseline_name)

``model`` is the checkpoint asr.sh averages for the config's first ``best_model_criterion``,
what ``--inference_asr_model`` has to name (the all-in-one configs select on ``acc_mean``,
so asr.sh's default ``valid.acc.ave.pth`` does not exist for them). ``arch`` is the
architecture as a subnet name: a stock Conformer's ``num_blocks-linear_units-32bit`` (ESPnet's
defaults where the config leaves them out), an all-in-one model's largest subnet.
"""

import sys

import yaml

from espnet_allinone.checkpoint import averaged_model_name
from espnet_allinone.subnet import SubnetSpace

ALLINONE_ENCODERS = ("allinone_conformer", "allinone_wav2vec2")
# espnet2.asr.encoder.conformer_encoder.ConformerEncoder's defaults
CONFORMER_DEFAULTS = {"num_blocks": 6, "linear_units": 2048}


def main(config: str, what: str) -> str:
    conf = yaml.safe_load(open(config))
    if what == "model":
        return averaged_model_name(conf)
    if what == "subnets":
        if conf["encoder"] not in ALLINONE_ENCODERS:
            return ""
        return " ".join(SubnetSpace.from_encoder_conf(conf["encoder_conf"]).names)
    if what == "arch":
        enc = conf.get("encoder_conf") or {}
        if conf["encoder"] in ALLINONE_ENCODERS:
            return SubnetSpace.from_encoder_conf(enc).largest.name
        if conf["encoder"] != "conformer":
            raise ValueError(f"{config}: arch of a {conf['encoder']!r} encoder is not known")
        enc = {**CONFORMER_DEFAULTS, **enc}
        return f"{enc['num_blocks']}-{enc['linear_units']}-32bit"
    raise ValueError(f"unknown query {what!r}: use subnets|model|arch")


if __name__ == "__main__":
    print(main(*sys.argv[1:]))
