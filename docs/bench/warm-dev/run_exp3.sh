#!/bin/bash
# warm start with --warm-new-share (train at least the new labels' share of the planned epochs), dev data only
cd /work/main
S=".venv/bin/al-loop simulate"
T="--train /tmp/q/trec_pool.txt --test /tmp/q/trec_dev.txt --format trec --task classification --strategy margin --seed-size 25 --batch-size 25 --rounds 10 --repeats 2 --max-length 64 --no-progress"
C="--train /work/shared/data/conll2003/train.txt --test /work/shared/data/conll2003/valid.txt --task ner --strategy least_confidence --seed-size 50 --batch-size 50 --rounds 7 --repeats 2 --max-length 64 --max-pool 2000 --max-test 800 --no-progress"
date -u; lscpu | grep "Model name"
$S $C --out /tmp/q/conll-share --warm-start --warm-schedule 0.34 --warm-new-share > /tmp/q/conll-share.log 2>&1; date -u
$S $T --out /tmp/q/trec-share --warm-start --warm-schedule 0.34 --warm-new-share > /tmp/q/trec-share.log 2>&1; date -u
echo done
