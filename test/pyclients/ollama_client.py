"""The `ollama` Python package against the router: list, show, ps, chat and generate
(streaming and not) on both board generations in every name form, embeddings, and
an unknown model."""

import ollama

from common import BOTH_MODEL, FA_MODEL, FL_MODEL, ROUTER, TEXT, check, name_forms, raises, streamed, token_by_token

client = ollama.Client(host=ROUTER)

listed = [m.model for m in client.list().models]
for model in (FA_MODEL, FL_MODEL, BOTH_MODEL):
    check(f"{model}:latest" in listed, f"list() names {model} as {model}:latest ({listed})")

for model in (FA_MODEL, FL_MODEL):
    for name in name_forms(model):
        shown = client.show(name)
        check(shown.details.format == "rkllm", f"show({name!r}) describes an rkllm model")

        reply = client.chat(model=name, messages=[{"role": "user", "content": "Hi"}])
        check(reply.message.content == TEXT, f"chat({name!r}) answers {reply.message.content!r}")
        check(reply.done and reply.done_reason == "stop", f"chat({name!r}) is done, stop")

        texts, times = streamed(
            client.chat(model=name, messages=[{"role": "user", "content": "Hi"}], stream=True),
            lambda part: part.message.content,
        )
        check("".join(texts) == TEXT, f"streaming chat({name!r}) adds up to the answer")
        token_by_token(texts, times, f"streaming chat({name!r})")

        whole = client.generate(model=name, prompt="Hi")
        check(whole.response == TEXT, f"generate({name!r}) answers {whole.response!r}")
        texts, _ = streamed(client.generate(model=name, prompt="Hi", stream=True), lambda p: p.response)
        check("".join(texts) == TEXT, f"streaming generate({name!r}) adds up to the answer")

loaded = [m.model for m in client.ps().models]
check(f"{FA_MODEL}:latest" in loaded and f"{FL_MODEL}:latest" in loaded, f"ps() lists both ({loaded})")

for name in name_forms(FL_MODEL) + [BOTH_MODEL]:
    batch = client.embed(model=name, input=["alpha", "beta"])
    check(len(batch.embeddings) == 2, f"embed({name!r}) of two inputs gives two vectors")
    legacy = client.embeddings(model=name, prompt="alpha")
    check(legacy.embedding == batch.embeddings[0], f"legacy embeddings({name!r}) gives the vector")

error = raises(lambda: client.embed(model=FA_MODEL, input="alpha"), ollama.ResponseError,
               f"embed({FA_MODEL!r}) on FastAPI boards only is refused")
check(error.status_code == 501 and "FastAPI" in error.error, "... with 501 saying why")

for call in (
    lambda: client.chat(model="no-such-model", messages=[{"role": "user", "content": "Hi"}]),
    lambda: client.generate(model="no-such-model", prompt="Hi"),
    lambda: client.show("no-such-model"),
):
    error = raises(call, ollama.ResponseError, "an unknown model raises ResponseError")
    check(error.status_code == 404 and "not found" in error.error, "... 404 'not found'")
