#!/usr/bin/env bash
# The skill library end to end on the synthetic tasks: a small dense Llama trained on every task,
# one LoRA adapter per task (copy, reverse, sort, addition; trained on prompt/completion JSONL
# of that task, the loss on the answers and EOS) added to a library, then a held-out mixed task
# (reverse and sort, half each): K-shot selection on 16 examples, composition with weights
# searched on them, the chosen skills mounted as LoRA experts behind routers trained on them,
# and every candidate's answer loss on 200 other examples of the mixed task.
# Prints one JSON line per stage.
#
#   scripts/skills-demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product moe >/dev/null
MOE=.build/release/moe
W=/tmp/moekit-skills-demo
rm -rf "$W" && mkdir -p "$W"
$MOE init-random --arch llama --out "$W/init" --vocab 300 --hidden 96 --layers 3 --heads 4 --kv-heads 2 \
    --dense-size 256 --dtype f32 --seed 1 >/dev/null
cat > "$W/base.json" <<JSON
{"data": {"synthetic": {"level": 1}}, "steps": 400, "batch": 16, "seq_len": 64, "lr": 0.003, "warmup": 20,
 "eval_interval": 400, "eval_samples": 0, "checkpoint_interval": 400, "checkpoint_dir": "$W/base", "seed": 1}
JSON
$MOE train --config "$W/base.json" --from "$W/init" --quiet >/dev/null
BASE="$W/base/checkpoint"
python3 - "$W" <<'PY'
import json, random, sys
w = sys.argv[1]
A = "abcdefghijklmnopqrstuvwxyz0123456789"
def example(rng, task):
    s = "".join(rng.choice(A) for _ in range(rng.randint(1, 4)))
    d = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 4)))
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return {"copy": {"prompt": f"copy:{s}=", "completion": s},
            "reverse": {"prompt": f"rev:{s}=", "completion": s[::-1]},
            "sort": {"prompt": f"sort:{d}=", "completion": "".join(sorted(d))},
            "addition": {"prompt": f"{a}+{b}=", "completion": str(a + b)}}[task]
def write(name, tasks, n, seed):
    rng = random.Random(seed)
    with open(f"{w}/{name}.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps(example(rng, tasks[i % len(tasks)])) + "\n")
for i, task in enumerate(["copy", "reverse", "sort", "addition"]):
    write(f"train-{task}", [task], 4000, 100 + i)
write("shots", ["reverse", "sort"], 16, 7)   # the held-out mixed task: K = 16 shots
write("eval", ["reverse", "sort"], 200, 8)   # and 200 other examples of it
PY
for task in copy reverse sort addition; do
    cat > "$W/$task.json" <<JSON
{"lora": {"rank": 8, "alpha": 16, "target_modules": "all-linear"},
 "data": {"jsonl": ["$W/train-$task.jsonl"]}, "steps": 300, "batch": 16, "seq_len": 24, "lr": 0.005,
 "warmup": 10, "eval_interval": 300, "eval_samples": 0, "checkpoint_interval": 300, "checkpoint_dir": "$W/lora-$task", "seed": 2}
JSON
    $MOE train --config "$W/$task.json" --from "$BASE" --quiet >/dev/null
    $MOE skills add --library "$W/library" --adapter "$W/lora-$task/checkpoint" --name "$task" --model "$BASE" \
        --tags "$task" --data "$W/train-$task.jsonl" >/dev/null
done
$MOE skills list --library "$W/library" | python3 -c "import json,sys; print(json.dumps({'library': [s['name'] for s in json.load(sys.stdin)]}))"
SELECT=$($MOE skills select --library "$W/library" --model "$BASE" --shots "$W/shots.jsonl" --k 2)
echo "$SELECT"
CHOSEN=$(echo "$SELECT" | python3 -c "import json,sys; print(','.join(c['name'] for c in json.load(sys.stdin)['chosen']))")
COMPOSED=$($MOE skills compose --library "$W/library" --model "$BASE" --shots "$W/shots.jsonl" --skills "$CHOSEN" --out "$W/composed")
echo "$COMPOSED"
WEIGHTS=$(echo "$COMPOSED" | python3 -c "import json,sys; w=json.load(sys.stdin)['weights']; print(','.join(str(w[n]) for n in '$CHOSEN'.split(',')))")
$MOE skills compose --library "$W/library" --model "$BASE" --shots "$W/eval.jsonl" --skills "$CHOSEN" --weights "$WEIGHTS" \
    --out "$W/composed-eval" | python3 -c "import json,sys; d=json.load(sys.stdin); d['on']='200 held-out examples'; print(json.dumps(d))"
$MOE skills compose --library "$W/library" --model "$BASE" --shots "$W/eval.jsonl" --skills copy,reverse,sort,addition \
    --weights 1,1,1,1 --out "$W/all-eval" | python3 -c "import json,sys; d=json.load(sys.stdin); d['on']='200 held-out examples, every skill summed'; print(json.dumps(d))"
$MOE skills mount --library "$W/library" --model "$BASE" --shots "$W/shots.jsonl" --skills "$CHOSEN" --weights "$WEIGHTS" \
    --out "$W/mounted" --eval "$W/eval.jsonl" | python3 -c "import json,sys; d=json.load(sys.stdin); d['mounted']='$CHOSEN'; print(json.dumps(d))"
