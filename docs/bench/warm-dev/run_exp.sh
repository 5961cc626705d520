#!/bin/bash
# warm-start experiment on dev data only (no test sets): TREC (train split 4,452 pool / 1,000 dev), CoNLL (train pool 2,000 / valid 800)
cd /work/main
S=".venv/bin/al-loop simulate"
T="--train /tmp/q/trec_pool.txt --test /tmp/q/trec_dev.txt --format trec --task classification --strategy margin --seed-size 25 --batch-size 25 --rounds 10 --repeats 2 --max-length 64 --no-progress"
C="--train /work/shared/data/conll2003/train.txt --test /work/shared/data/conll2003/valid.txt --task ner --strategy least_confidence --seed-size 50 --batch-size 50 --rounds 7 --repeats 2 --max-length 64 --max-pool 2000 --max-test 800 --no-progress"
date -u; lscpu | grep "Model name"
$S $T --out /tmp/q/trec-warm --warm-start --warm-schedule 0.34 > /tmp/q/trec-warm.log 2>&1; date -u
$S $T --out /tmp/q/trec-base > /tmp/q/trec-base.log 2>&1; date -u
$S $C --out /tmp/q/conll-warm --warm-start --warm-schedule 0.34 > /tmp/q/conll-warm.log 2>&1; date -u
$S $C --out /tmp/q/conll-base > /tmp/q/conll-base.log 2>&1; date -u
echo done
