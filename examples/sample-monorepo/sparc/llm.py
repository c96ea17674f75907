"""A stand-in LLM client: deterministic, offline, counts its calls."""


class _Completions:
    calls = 0

    def create(self, *, model, messages):
        _Completions.calls += 1
        text = messages[-1]["content"]
        return {"choices": [{"message": {"content": "complex" if len(text.split()) > 6 else "simple"}}]}


class _Chat:
    completions = _Completions()


class Client:
    chat = _Chat()


client = Client()
