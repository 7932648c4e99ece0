"""The `openai` Python package against the router's /v1: models, chat completions and
completions (streaming and not) on both board generations, embeddings, and an
unknown model."""

import openai

from common import BOTH_MODEL, FA_MODEL, FL_MODEL, ROUTER, TEXT, check, name_forms, raises, streamed, token_by_token

client = openai.OpenAI(base_url=f"{ROUTER}/v1", api_key="unused", max_retries=0)

ids = [m.id for m in client.models.list()]
for model in (FA_MODEL, FL_MODEL, BOTH_MODEL):
    check(f"{model}:latest" in ids, f"models.list() has {model}:latest ({ids})")
check(client.models.retrieve(FA_MODEL).id == FA_MODEL, "models.retrieve() answers the id asked")

HI = [{"role": "user", "content": "Hi"}]
for model in (FA_MODEL, FL_MODEL):
    for name in name_forms(model):
        reply = client.chat.completions.create(model=name, messages=HI, max_tokens=64)
        check(reply.choices[0].message.content == TEXT, f"chat.completions({name!r}) answers")
        check(reply.choices[0].finish_reason == "stop", f"chat.completions({name!r}) finishes: stop")
        check(reply.usage.completion_tokens > 0, f"chat.completions({name!r}) counts tokens")

        stream = client.chat.completions.create(
            model=name, messages=HI, stream=True, stream_options={"include_usage": True}
        )
        usage, finishes = [], []

        def text_of(chunk):
            if chunk.usage:
                usage.append(chunk.usage)
            for choice in chunk.choices:
                if choice.finish_reason:
                    finishes.append(choice.finish_reason)
            return chunk.choices[0].delta.content if chunk.choices else None

        texts, times = streamed(stream, text_of)
        check("".join(texts) == TEXT, f"streamed chat.completions({name!r}) adds up to the answer")
        token_by_token(texts, times, f"streamed chat.completions({name!r})")
        check(finishes == ["stop"], f"streamed chat.completions({name!r}) finishes once: {finishes}")
        check(len(usage) == 1 and usage[0].total_tokens > 0, f"... with usage ({usage})")

        whole = client.completions.create(model=name, prompt="Hi")
        check(whole.choices[0].text == TEXT, f"completions({name!r}) answers")
        texts, _ = streamed(
            client.completions.create(model=name, prompt="Hi", stream=True),
            lambda c: c.choices[0].text if c.choices else None,
        )
        check("".join(texts) == TEXT, f"streamed completions({name!r}) adds up to the answer")

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}]
for model in (FA_MODEL, FL_MODEL):
    reply = client.chat.completions.create(model=model, messages=HI, tools=TOOLS)
    check(reply.choices[0].message.content == TEXT, f"chat.completions({model!r}) with tools answers")
    texts, _ = streamed(
        client.chat.completions.create(model=model, messages=HI, tools=TOOLS, stream=True),
        lambda c: c.choices[0].delta.content if c.choices else None,
    )
    check("".join(texts) == TEXT, f"streamed chat.completions({model!r}) with tools answers")

for name in (FL_MODEL, BOTH_MODEL):
    batch = client.embeddings.create(model=name, input=["alpha", "beta", "gamma"])
    check([d.index for d in batch.data] == [0, 1, 2], f"embeddings({name!r}): one per input")
    check(all(isinstance(x, float) for x in batch.data[0].embedding), "... as floats")
    floats = client.embeddings.create(model=name, input="alpha", encoding_format="float")
    check(len(floats.data[0].embedding) == len(batch.data[0].embedding), "... float format too")

error = raises(lambda: client.embeddings.create(model=FA_MODEL, input="alpha"), openai.APIStatusError,
               f"embeddings({FA_MODEL!r}) on FastAPI boards only is refused")
check(error.status_code == 501, "... with 501")

raises(lambda: client.chat.completions.create(model="no-such-model", messages=HI), openai.NotFoundError,
       "an unknown model raises NotFoundError")
raises(lambda: client.chat.completions.create(model=FA_MODEL, messages=[]), openai.BadRequestError,
       "no messages raises BadRequestError")
raises(lambda: client.chat.completions.create(model=FA_MODEL, messages=HI, n=2), openai.BadRequestError,
       "n=2 on a FastAPI board raises BadRequestError")
