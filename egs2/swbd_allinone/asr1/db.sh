# shellcheck shell=bash disable=SC2034
# Corpus locations (LDC). Fill in before running local/data.sh.
# Switchboard-1 Release 2 (LDC97S62), the 300 h training set:
SWBD=
# Hub5'00 evaluation (eval2000): speech LDC2002S09 (hub5e_00) and transcripts LDC2002T43:
EVAL2000_SPEECH=
EVAL2000_TRANS=
# RT-02 CTS evaluation set (swbd1, swbd2, swbd3 parts), e.g. LDC2004S11: a directory with
# the .sph files and the reference .stm file(s) below it:
RT02=
# RT-03 CTS evaluation set (swbd, fsh parts), LDC2007S10:
RT03=
