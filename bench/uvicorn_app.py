"""The baseline a lab would write instead of Ray Serve: the same pain predictor behind a
plain FastAPI app on uvicorn, one process, batch size 1.

    python bench/uvicorn_app.py --checkpoint DIR --port 8123 [--threads 1]

It parses the request with the serving layer's ``read_payload`` and decodes it with
``PainPredictor.decode`` (the same code the Serve ingress runs), then predicts and encodes
in the handler itself: one event loop, no thread hop, no second process. No access log
(a lab's production settings).

No ``from __future__ import annotations``: FastAPI must see the handler's ``Request`` type.
"""

import argparse
import sys
from pathlib import Path

try:
    import affectlab  # noqa: F401
except ImportError:  # not installed: use the source root, as the jobs do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))


def make_app(checkpoint: str, max_upload_bytes: int = 10_000_000):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from affectlab.serving.layer import BadInput, read_payload
    from affectlab.serving.pain import PainPredictor
    from affectlab.serving.registry import ModelRegistry

    predictor = PainPredictor()
    registry = ModelRegistry(checkpoint, "pain")
    entry = registry.get(None)
    model = predictor.load(entry)
    app = FastAPI(title="plain pain scorer")

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/v1/pain/score")
    async def score(request: Request) -> dict:
        payload = await read_payload(request, max_upload_bytes, predictor.raw_field, predictor.raw_media)
        item = predictor.decode(payload, entry)
        return predictor.encode(predictor.predict_batch(model, [item])[0])

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (a 1-CPU Serve replica has 1)")
    args = p.parse_args()

    import torch
    import uvicorn

    torch.set_num_threads(args.threads)
    uvicorn.run(make_app(args.checkpoint), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
