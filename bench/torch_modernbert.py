"""PyTorch side of the ModernBERT benchmark: the same shapes and steps in eager PyTorch (Debian's
python3-torch), with the project's independent reference model (shared/reference/modernbert_ref.py:
nn.Modules with the real HF names, eager attention with dense masks as transformers' eager/sdpa path).
usage: /usr/bin/python3 bench/torch_modernbert.py MODEL_DIR [threads]"""
import json, os, resource, sys, time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "reference"))
from modernbert_ref import ModernBertForSequenceClassificationRef  # noqa: E402

model_dir = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)
model = ModernBertForSequenceClassificationRef.from_pretrained(model_dir)
T, B = 512, 8
ids = torch.randint(1000, 41000, (B, T))
ids[:, 0], ids[:, -1] = 50281, 50282
mask = torch.ones(B, T, dtype=torch.long)
labels = torch.tensor([b % 3 for b in range(B)])
model.eval()
best = 1e30
with torch.no_grad():
    for _ in range(3):
        t0 = time.perf_counter()
        model(ids[:1], mask[:1])
        best = min(best, time.perf_counter() - t0)
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
total = 0.0
for step in range(4):
    t0 = time.perf_counter()
    out = model(ids, mask, labels)
    out["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    dt = time.perf_counter() - t0
    if step > 0:
        total += dt
print(json.dumps({"torch": torch.__version__, "threads": threads, "classify_512_ms": round(best * 1e3, 1),
                  "train_step_8x512_s": round(total / 3, 2), "train_tokens_per_s": round(3 * B * T / total, 1),
                  "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1048576.0, 2)}))
