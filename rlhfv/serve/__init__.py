"""rlhfv's generative judges as an HTTP reward service (`rlhfv serve grm --help`).

- `rlhfv.serve.protocol`: the request and response bodies, the caps, and image decoding;
- `rlhfv.serve.batching`: concurrent requests gathered into shared judge calls;
- `rlhfv.serve.grm`: the FastAPI app, its endpoints and the command line.

FastAPI and uvicorn are the `serve` extra (`pip install rlhfv[serve]`); they are imported only
when a server is built, so `import rlhfv` stays cheap.
"""
