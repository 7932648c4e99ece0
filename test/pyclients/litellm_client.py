"""LiteLLM against the router, unchanged, through its Ollama providers (`ollama/`,
`ollama_chat/`) and its OpenAI-compatible one (`openai/` with api_base): completion
streaming and not on both board generations, embeddings, and an unknown model."""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402

litellm.suppress_debug_info = True

from common import BOTH_MODEL, FA_MODEL, FL_MODEL, ROUTER, TEXT, check, raises, streamed  # noqa: E402

HI = [{"role": "user", "content": "Hi"}]
V1 = {"api_base": f"{ROUTER}/v1", "api_key": "unused"}

for model in (FA_MODEL, FL_MODEL):
    routes = [
        (f"ollama_chat/{model}", {"api_base": ROUTER}),
        (f"ollama/{model}:latest", {"api_base": ROUTER}),
        (f"openai/{model}", V1),
    ]
    for name, where in routes:
        reply = litellm.completion(model=name, messages=HI, **where)
        check(reply.choices[0].message.content == TEXT, f"completion({name!r}) answers")
        texts, _ = streamed(
            litellm.completion(model=name, messages=HI, stream=True, **where),
            lambda chunk: chunk.choices[0].delta.content if chunk.choices else None,
        )
        check("".join(texts) == TEXT, f"streamed completion({name!r}) adds up to the answer")
    text = litellm.text_completion(model=f"openai/{model}", prompt="Hi", **V1)
    check(text.choices[0].text == TEXT, f"text_completion('openai/{model}') answers")

for name, where in ((f"ollama/{FL_MODEL}", {"api_base": ROUTER}), (f"openai/{BOTH_MODEL}", V1)):
    result = litellm.embedding(model=name, input=["alpha", "beta"], **where)
    check(len(result.data) == 2, f"embedding({name!r}) of two inputs gives two vectors")

raises(lambda: litellm.completion(model="openai/no-such-model", messages=HI, **V1),
       litellm.NotFoundError, "an unknown model raises NotFoundError through the OpenAI route")
raises(lambda: litellm.completion(model="ollama_chat/no-such-model", messages=HI, api_base=ROUTER),
       litellm.NotFoundError, "an unknown model raises NotFoundError through the Ollama route")
