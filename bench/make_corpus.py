#!/usr/bin/env python3
"""Build the ~10 MB mixed-language tokenizer benchmark corpus (one text per line, JSON-escaped
newlines removed) from ../shared/data (prompts and responses, English plus ToxicChat's other
languages) and the multilingual tokenizer golden texts, repeated in a fixed order."""
import glob, json, os, sys

here = os.path.dirname(os.path.abspath(__file__))
data = os.path.join(here, "..", "..", "shared", "data", "converted")
gold = os.path.join(here, "..", "tests", "fixtures", "tokenizers", "qwen3", "encode.jsonl")
out = sys.argv[1] if len(sys.argv) > 1 else "corpus.txt"
target = int(float(sys.argv[2]) * 1e6) if len(sys.argv) > 2 else 10_000_000
texts = []
for f in sorted(glob.glob(os.path.join(data, "*.jsonl"))):
    for line in open(f, encoding="utf-8"):
        r = json.loads(line)
        for k in ("prompt", "response"):
            if isinstance(r.get(k), str) and r[k].strip():
                texts.append(r[k].replace("\n", " "))
golden = [json.loads(l)["text"].replace("\n", " ") for l in open(gold, encoding="utf-8")]
golden = [t for t in golden if t.strip() and "\x00" not in t]
size, i, lines = 0, 0, []
while size < target:
    t = texts[i % len(texts)] if i % 4 else golden[(i // 4) % len(golden)]
    lines.append(t)
    size += len(t.encode("utf-8")) + 1
    i += 1
with open(out, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
print(f"{out}: {size} bytes, {len(lines)} lines")
