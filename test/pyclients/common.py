"""What every client script shares: where the router is, which models live on which
board generation, and a check() that says what failed."""

import os
import sys
import time

ROUTER = os.environ["ROUTER_URL"]
# A model only FastAPI-generation boards hold, one only Flask-generation boards hold,
# and one both hold (embeddings of it must go to the Flask one).
FA_MODEL = os.environ["FA_MODEL"]
FL_MODEL = os.environ["FL_MODEL"]
BOTH_MODEL = os.environ["BOTH_MODEL"]
# What the stub runtime answers, word by word.
TOKENS = int(os.environ["STUB_TOKENS"])
TOKEN_MS = int(os.environ["STUB_TOKEN_MS"])
CLIENT = os.path.basename(sys.argv[0]).removesuffix(".py")


def check(condition, what):
    """Stops the script with `what` when `condition` is false; says ok otherwise."""
    if not condition:
        print(f"FAIL {CLIENT}: {what}", flush=True)
        sys.exit(1)
    print(f"ok {CLIENT}: {what}", flush=True)


def raises(call, kind, what):
    """Runs `call`, which must raise `kind`; returns the exception."""
    try:
        call()
    except kind as error:  # noqa: PERF203
        check(True, f"{what} ({type(error).__name__}: {str(error)[:160]})")
        return error
    except Exception as error:  # noqa: BLE001
        check(False, f"{what}: raised {type(error).__name__}: {error}")
    check(False, f"{what}: raised nothing")
    return None


def name_forms(model):
    """The forms a client may name a model by: bare, tagged, namespaced."""
    return [model, f"{model}:latest", f"library/{model}"]


def streamed(chunks, text_of):
    """Reads a stream; returns its texts (empty ones left out) and when each came."""
    texts, times = [], []
    for chunk in chunks:
        text = text_of(chunk)
        if text:
            texts.append(text)
            times.append(time.monotonic())
    return texts, times


def token_by_token(texts, times, what):
    """Checks that a stream came as the board's tokens, one at a time, not all at once."""
    check(len(texts) == TOKENS, f"{what}: {len(texts)} chunks for {TOKENS} tokens")
    # From the second chunk: a client's first chunk can come late by its own
    # first-use work, which shows no buffering (once in CI langchain's six chunks
    # spanned 45 ms where the board took 125). A proxy that buffers still brings
    # the rest at once.
    spread = (times[-1] - times[1]) * 1000 if len(times) > 1 else 0
    check(
        spread >= (TOKENS - 2) * TOKEN_MS * 0.5,
        f"{what}: chunks 2 to {len(times)} spread over {spread:.0f} ms, as the board made them",
    )

# The whole answer the stub gives (its first STUB_TOKENS words).
TEXT = os.environ["EXPECTED_TEXT"]
