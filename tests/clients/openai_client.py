"""Drives `tuningfork serve` with the official `openai` package, as an application would.

Usage: openai_client.py BASE_URL API_KEY (all|auth). Asserts as it goes; prints a JSON summary
for the Rust test to check against the store.
"""
import json
import sys

import openai

base, key, mode = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
MODEL = "smollm2-135m"
summary = {}


def user(text):
    return [{"role": "user", "content": text}]


if mode == "auth":
    wrong = openai.OpenAI(base_url=base + "/v1", api_key="not-the-key", max_retries=0)
    try:
        wrong.models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401, e
        assert "API key" in str(e), e
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids, ids
    r = client.chat.completions.create(
        model=MODEL, messages=user("Say yes."), max_tokens=4, temperature=0
    )
    assert r.choices[0].message.content, r
    print(json.dumps({"models": ids}))
    sys.exit(0)

ids = [m.id for m in client.models.list()]
assert MODEL in ids and "program:sentiment" in ids, ids
summary["models"] = ids

# A chat completion.
r = client.chat.completions.create(
    model=MODEL, messages=user("Name a colour."), max_tokens=12, temperature=0
)
assert r.choices[0].message.content, r
assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage
assert r.choices[0].finish_reason in ("stop", "length"), r
summary["chat"] = r.choices[0].message.content

# A streamed one: several pieces, a finish reason, usage at the end.
request = dict(
    model=MODEL,
    messages=user("Count from one to ten in words."),
    max_tokens=24,
    temperature=0,
)
pieces, finish, usage = [], None, None
for chunk in client.chat.completions.create(
    stream=True, stream_options={"include_usage": True}, **request
):
    if chunk.usage:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
assert len(pieces) > 3, pieces
assert finish in ("stop", "length"), finish
assert usage is not None and usage.completion_tokens > 0, usage
streamed = "".join(pieces)
# The same request unstreamed is answered from the store with the same text.
whole = client.chat.completions.create(**request)
assert whole.choices[0].message.content == streamed, (whole, streamed)
summary["streamed"] = streamed

# A reply constrained by a JSON schema.
schema = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "likes_tea": {"type": "boolean"},
    },
    "required": ["name", "age", "likes_tea"],
    "additionalProperties": False,
}
r = client.chat.completions.create(
    model=MODEL,
    messages=user("Invent a person. Reply in JSON."),
    response_format={
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": schema, "strict": True},
    },
    max_tokens=64,
    temperature=0,
)
person = json.loads(r.choices[0].message.content)
assert set(person) == {"name", "age", "likes_tea"}, person
assert isinstance(person["age"], int) and isinstance(person["likes_tea"], bool), person
summary["person"] = person

# json_object mode.
r = client.chat.completions.create(
    model=MODEL,
    messages=user('Reply with a JSON object like {"colour": "red"}.'),
    response_format={"type": "json_object"},
    max_tokens=256,
    temperature=0,
)
assert isinstance(json.loads(r.choices[0].message.content), dict), r

# Several choices, seeded.
r = client.chat.completions.create(
    model=MODEL, messages=user("Write one word."), max_tokens=6, temperature=1.0, seed=3, n=2
)
assert len(r.choices) == 2 and [c.index for c in r.choices] == [0, 1], r

# A text completion.
r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0)
assert r.choices[0].text, r
summary["completion"] = r.choices[0].text

# A program, addressed as a model: plain text in, its outputs as a JSON object out.
r = client.chat.completions.create(model="program:sentiment", messages=user("It broke after one day."))
outputs = json.loads(r.choices[0].message.content)
assert outputs["sentiment"] in ("positive", "negative", "neutral"), outputs
summary["program"] = outputs

# Errors arrive as OpenAI error objects with the right status.
try:
    client.chat.completions.create(model="no-such-model", messages=user("hi"))
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    assert e.status_code == 404 and "no model `no-such-model`" in str(e), e
try:
    client.chat.completions.create(model=MODEL, messages=user("hi"), n=50)
    raise AssertionError("n = 50 was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and "`n`" in str(e), e
try:
    client.chat.completions.create(model=MODEL, messages=user("word " * 5000))
    raise AssertionError("a prompt over the context was accepted")
except openai.BadRequestError as e:
    assert "context" in str(e), e

print(json.dumps(summary))
