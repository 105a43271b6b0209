"""deform: the fast CPU deformable convolution against torchvision's kernel, per layer and whole model."""

from __future__ import annotations

import os
import statistics
import time

DEFORM_MODELS = ("deformable_cnn", "deformable_cnn_a")


def _deform_layer_ips(block, x, seconds: float) -> float:
    """Training images/s of one DeformBlock alone: forward, backward to its input and parameters."""
    import torch

    x = x.detach().requires_grad_(x.shape[1] > 1)  # the first layer's image needs no gradient
    grad = None
    steps, t0 = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - t0 < seconds:
        out = block(x)
        if grad is None:
            grad = torch.randn_like(out)
        out.backward(grad)
        steps += 1
    return steps * len(x) / (time.perf_counter() - t0)


def deform(models: tuple[str, ...] | list[str] = DEFORM_MODELS, batch_size: int = 64, seconds: float = 2.0,
           repeats: int = 3, threads: int = 1, log=print) -> dict:
    """Training images/s of each deformable layer and of each whole model on the CPU, with torchvision's
    kernel (FMNIST_FAST_DEFORM=0) and with fmnist's fast path, alternating per repeat; medians and ratios."""
    import torch

    from fmnist import models as registry
    from fmnist.models import deform_ops, measure
    from fmnist.models.deformable import DeformBlock
    from fmnist.runtime import device_name

    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    rows = []
    previous = os.environ.get(deform_ops.FAST_CPU_ENV)
    try:
        for name in models:
            torch.manual_seed(0)
            model = registry.build_model(name)
            blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, DeformBlock)]
            inputs: dict[str, torch.Tensor] = {}
            hooks = [m.register_forward_pre_hook(lambda _m, inp, n=n, seen=inputs: seen.update({n: inp[0]}))
                     for n, m in blocks]  # update() returns None: the hook records and changes nothing
            with torch.no_grad():
                model(torch.randn(batch_size, 1, 28, 28))
            for h in hooks:
                h.remove()
            samples: dict[str, dict[str, list[float]]] = {}
            for rep in range(repeats):
                for mode, env in (("torchvision", "0"), ("fast", "1")):
                    os.environ[deform_ops.FAST_CPU_ENV] = env
                    for n, m in blocks:
                        ips = _deform_layer_ips(m, inputs[n], seconds)
                        samples.setdefault(n, {}).setdefault(mode, []).append(ips)
                    ips, _ = measure.train_images_per_second(model, cpu, batch_size, seconds)
                    samples.setdefault("whole model", {}).setdefault(mode, []).append(ips)
                    log(f"[bench] {name} repeat {rep + 1}/{repeats} {mode:11s} whole model {ips:8.1f} images/s")
            for part, by_mode in samples.items():
                tv, fast = statistics.median(by_mode["torchvision"]), statistics.median(by_mode["fast"])
                shape = "" if part == "whole model" else "x".join(map(str, inputs[part].shape[1:]))
                rows.append({"model": name, "part": part, "input": shape,
                             "torchvision_images_per_s": round(tv, 1), "fast_images_per_s": round(fast, 1),
                             "ratio": round(fast / tv, 2)})
    finally:
        if previous is None:
            os.environ.pop(deform_ops.FAST_CPU_ENV, None)
        else:
            os.environ[deform_ops.FAST_CPU_ENV] = previous
    return {"rows": rows, "batch_size": batch_size, "threads": threads, "seconds": seconds,
            "repeats": repeats, "device_name": device_name(cpu), "load_average": list(os.getloadavg())}
