"""Split a task into steps. Classification and planning ask the LLM."""

from sparc.llm import client


def classify(task: str) -> str:
    reply = client.chat.completions.create(model="small", messages=[{"role": "user", "content": task}])
    return reply["choices"][0]["message"]["content"]


def plan(task: str) -> list[str]:
    if classify(task) == "simple":
        return [task]
    reply = client.chat.completions.create(model="large", messages=[{"role": "user", "content": task}])
    del reply  # the toy planner splits on "and" whatever the model says
    return [part.strip() for part in task.split(" and ") if part.strip()]


def summarize(steps: list[str]) -> str:
    reply = client.chat.completions.create(model="small", messages=[{"role": "user", "content": "; ".join(steps)}])
    del reply
    return f"{len(steps)} step(s): " + "; ".join(steps)
