"""python -m bench.image_memory [--images N] [--image-mib M] [--budgets MiB,MiB,...]

What images in flight cost a worker in memory, to size MINT_IMAGE_MEMORY_BUDGET_BYTES and the
pod's memory limit (docs/deploy.md, "Memory"). No devstack: for each budget a fresh process
imports the worker's modules, then runs N image activities at once the way `upload_image` does
(`ImageLoader.loaded` -> `compute_cid` -> `KuboClient.add`), each fetching an incompressible
M MiB PNG over HTTP from a server in another process, which also takes the uploads. It reports
that process's RSS before (warmed up by one image) and its peak during the run (VmHWM, reset
first; sampled too when the kernel does not allow the reset), and the peak's rise per MiB of
budget. A budget of 0 means none (every image at once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

MIB = 2**20


def rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# -- the server: images out, uploads in (another process, so its memory is not counted) -------


def serve(image_mib: int) -> None:
    from aiohttp import web

    from mintsaga.ipfs.cid import cid_sync

    image = b"\x89PNG\r\n\x1a\n" + os.urandom(image_mib * MIB - 8)
    image_cid = cid_sync(image)

    async def get_image(request: web.Request) -> web.Response:
        return web.Response(body=image, content_type="image/png")

    async def add(request: web.Request) -> web.Response:
        reader = await request.multipart()
        size = 0
        async for part in reader:
            while chunk := await part.read_chunk():  # type: ignore[union-attr]
                size += len(chunk)
        line = {"Name": "image.png", "Hash": image_cid, "Size": str(size)}
        return web.Response(text=json.dumps(line) + "\n")

    async def main() -> None:
        app = web.Application(client_max_size=(image_mib + 1) * MIB)
        app.router.add_get("/img/{n}", get_image)
        app.router.add_post("/api/v0/add", add)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# -- one measurement: a fresh process per budget ---------------------------------------------


def measure(base: str, images: int, image_mib: int, budget_mib: int) -> dict[str, float]:
    import httpx

    import mintsaga.worker  # noqa: F401  (the worker's modules, as a worker has them loaded)
    from mintsaga.ipfs.cid import compute_cid
    from mintsaga.ipfs.images import ByteBudget, ImageLoader
    from mintsaga.ipfs.kubo import KuboClient

    cap = image_mib * MIB + MIB
    budget = ByteBudget(budget_mib * MIB if budget_mib else images * cap)
    peak_sampled = 0
    running = True

    def sample() -> None:
        nonlocal peak_sampled
        while running:
            peak_sampled = max(peak_sampled, rss_kib())
            time.sleep(0.002)

    async def one(loader: ImageLoader, kubo: KuboClient, n: int) -> None:
        async with loader.loaded({"url": f"{base}/img/{n}"}) as image:
            cid = await compute_cid(image.data)
            assert await kubo.add(image.data, filename="image.png") == cid

    async def run() -> dict[str, float]:
        nonlocal running
        timeout = httpx.Timeout(120.0)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
            loader = ImageLoader(None, http, max_bytes=cap, allow_private_hosts=True, budget=budget)
            kubo = KuboClient(base, http)
            await one(loader, kubo, 0)  # warm up: connections, buffers, the hasher
            before = rss_kib()
            reset = reset_peak()
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.monotonic()
            await asyncio.gather(*(one(loader, kubo, n) for n in range(1, images + 1)))
            elapsed = time.monotonic() - started
            running = False
            sampler.join()
            peak = rss_kib("VmHWM") if reset else peak_sampled
        return {
            "budget_mib": budget_mib,
            "images": images,
            "image_mib": image_mib,
            "rss_before_mb": before / 1024,
            "rss_peak_mb": max(peak, peak_sampled) / 1024,
            "rise_mb": (max(peak, peak_sampled) - before) / 1024,
            "seconds": elapsed,
            "peak_from": "VmHWM" if reset else "sampled",
        }

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.image_memory")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--image-mib", type=int, default=10)
    parser.add_argument("--budgets", default="0,64,128,256")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.image_mib)
        return
    if args.measure:
        base, budget = args.measure.rsplit(" ", 1)
        print(json.dumps(measure(base, args.images, args.image_mib, int(budget))))
        return
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.image_memory", "--serve", "--image-mib", str(args.image_mib)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        base = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        print("| budget (MiB) | images at once | RSS before (MB) | peak (MB) | rise (MB) | s |")
        print("|---|---|---|---|---|---|")
        for budget in (int(b) for b in args.budgets.split(",")):
            child = [sys.executable, "-m", "bench.image_memory", "--images", str(args.images)]
            child += ["--image-mib", str(args.image_mib), "--measure", f"{base} {budget}"]
            result = json.loads(subprocess.run(child, check=True, capture_output=True).stdout)
            at_once = budget // (args.image_mib + 1) if budget else args.images
            print(
                f"| {budget or 'none'} | {at_once} | {result['rss_before_mb']:.1f} "
                f"| {result['rss_peak_mb']:.1f} | {result['rise_mb']:.1f} "
                f"| {result['seconds']:.1f} |",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
