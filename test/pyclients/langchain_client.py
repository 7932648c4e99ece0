"""`langchain-ollama` against the router: ChatOllama (validate_model_on_init, in every
name form, invoke and stream), OllamaLLM, OllamaEmbeddings, and an unknown model."""

from langchain_ollama import ChatOllama, OllamaEmbeddings, OllamaLLM

from common import BOTH_MODEL, FA_MODEL, FL_MODEL, ROUTER, TEXT, check, name_forms, raises, streamed, token_by_token

for model in (FA_MODEL, FL_MODEL):
    # validate_model_on_init checks the name against /api/tags, where Ollama lists x:latest.
    for name in (model, f"{model}:latest"):
        chat = ChatOllama(model=name, base_url=ROUTER, validate_model_on_init=True)
        check(chat.invoke("Hi").content == TEXT, f"ChatOllama({name!r}, validated).invoke answers")
        texts, times = streamed(chat.stream("Hi"), lambda chunk: chunk.content)
        check("".join(texts) == TEXT, f"ChatOllama({name!r}).stream adds up to the answer")
        token_by_token(texts, times, f"ChatOllama({name!r}).stream")
    namespaced = name_forms(model)[2]
    chat = ChatOllama(model=namespaced, base_url=ROUTER)
    check(chat.invoke("Hi").content == TEXT, f"ChatOllama({namespaced!r}).invoke answers")
    llm = OllamaLLM(model=f"{model}:latest", base_url=ROUTER, validate_model_on_init=True)
    check(llm.invoke("Hi") == TEXT, f"OllamaLLM({model!r}:latest).invoke answers")

for name in (f"{FL_MODEL}:latest", BOTH_MODEL):
    embeddings = OllamaEmbeddings(model=name, base_url=ROUTER, validate_model_on_init=True)
    vectors = embeddings.embed_documents(["alpha", "beta"])
    check(len(vectors) == 2 and len(vectors[0]) > 0, f"OllamaEmbeddings({name!r}): two vectors")
    check(embeddings.embed_query("alpha") == vectors[0], f"OllamaEmbeddings({name!r}).embed_query")

raises(lambda: ChatOllama(model="no-such-model", base_url=ROUTER, validate_model_on_init=True),
       ValueError, "validate_model_on_init refuses an unknown model")
