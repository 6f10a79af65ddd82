"""Chats for supervised fine-tuning: rows → messages → tokens with an assistant-only loss mask.

Rows come in the shapes people have: a ``messages`` list (role/content, multi-turn, optional
system turn), prompt/completion pairs, instruction/input/output records, or any tabular row
turned into a user turn by ``prompt_template`` (E2E's ``{mr}``). The tokenizer's chat template
(or ``template``) renders the conversation; the loss falls on assistant tokens only.

Assistant spans are found by rendering, not by markers: for assistant turn *i*, the text of
turns ``< i`` with the generation prompt must be a prefix of the full text, and the span runs
from there to the end of turn *i* as rendered — its closing token included, the whitespace
the template puts after it not. Templates without
``{% generation %}`` markers (SmolLM2's ChatML among them) work; a template whose renders are
not prefixes of each other cannot give spans and is an error, never a fall-back to training on
every token (the all-ones mask of NVIDIA-NeMo/Megatron-Bridge #3359). A token that straddles
the prompt/answer boundary counts as an answer token, so the first answer token is never
dropped (OpenRLHF #973).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from data.errors import ConfigError, DataError

ROLES = ("system", "user", "assistant")
IGNORE = -100  # the label of a token the loss skips (PyTorch's cross-entropy default)


@dataclass
class ChatSpec:
    """How a row becomes a chat (``data.chat.*``).

    Args:
        messages_field: Column holding a list of ``{role, content}`` turns.
        prompt_field: With ``completion_field``: a single-turn pair (used when set).
        completion_field: The assistant's answer for prompt/completion or templated rows.
        instruction_field: With ``output_field``: instruction/input/output records.
        input_field: Optional input appended to the instruction (blank line between).
        output_field: The answer of an instruction record.
        prompt_template: A Python format string over the row's columns (``"Describe: {mr}"``)
            that becomes the user turn; the answer comes from ``completion_field``.
        system: A system turn put first when a conversation has none (``null``: the
            template's own default, if it has one).
        train_on_prompt: Put system and user tokens in the loss too.
        delexicalize: Attributes whose slot values (``data.slot_pattern``) the model reads
            and writes as placeholders (E2E: ``[name, near]``, as TGen does); ``evaluate``
            writes the values back into each answer before scoring (data/delex.py).
        placeholder: The placeholder of an attribute, ``{slot}`` standing for its name.
    """

    messages_field: str = "messages"
    prompt_field: Optional[str] = None
    completion_field: Optional[str] = None
    instruction_field: Optional[str] = None
    input_field: Optional[str] = None
    output_field: Optional[str] = None
    prompt_template: Optional[str] = None
    system: Optional[str] = None
    train_on_prompt: bool = False
    delexicalize: List[str] = field(default_factory=list)
    placeholder: str = "X-{slot}"

    def __post_init__(self) -> None:
        if (self.prompt_field or self.prompt_template) and not self.completion_field:
            raise ConfigError("data.chat.completion_field", "is required with "
                              "prompt_field or prompt_template: the assistant's answer")
        if self.instruction_field and not self.output_field:
            raise ConfigError("data.chat.output_field", "is required with instruction_field")
        if self.delexicalize and "{slot}" not in self.placeholder:
            raise ConfigError("data.chat.placeholder", f"{self.placeholder!r} lacks {{slot}}: "
                              "every attribute would get the same placeholder")


def to_messages(row: dict[str, Any], spec: ChatSpec, where: str, answered: bool = True
                ) -> list[dict[str, str]]:
    """The row's conversation, checked: known roles, text content, one assistant turn at
    least. ``where`` (``file:line``) starts every error.

    ``answered=False``: the prompt alone (a distillation's transfer prompts, which the
    teacher answers): no answer field is read, a ``messages`` list is cut after its last
    user turn, and that turn must exist."""
    if spec.prompt_template:
        try:
            prompt = spec.prompt_template.format(**row)
        except (KeyError, IndexError) as exc:
            raise DataError(where, f"data.chat.prompt_template names {exc} but the row has "
                            f"only {sorted(row)}") from None
        turns = [{"role": "user", "content": prompt},
                 {"role": "assistant", "content": row.get(spec.completion_field)}]
    elif spec.prompt_field:
        turns = [{"role": "user", "content": row.get(spec.prompt_field)},
                 {"role": "assistant", "content": row.get(spec.completion_field)}]
    elif spec.instruction_field:
        prompt = row.get(spec.instruction_field)
        extra = row.get(spec.input_field) if spec.input_field else None
        if isinstance(prompt, str) and isinstance(extra, str) and extra.strip():
            prompt = f"{prompt}\n\n{extra}"
        turns = [{"role": "user", "content": prompt},
                 {"role": "assistant", "content": row.get(spec.output_field)}]
    else:
        turns = row.get(spec.messages_field)
        if not isinstance(turns, list) or not turns:
            raise DataError(where, f"'{spec.messages_field}' must be a non-empty list of "
                            f"{{role, content}} turns, got {type(turns).__name__}",
                            "or set data.chat.prompt_field/completion_field for pairs")
    if not answered and (spec.prompt_template or spec.prompt_field or spec.instruction_field):
        turns = turns[:1]  # the answer field is not read: a transfer prompt has none
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise DataError(where, f"turn {i} is not a {{role, content}} object: {turn!r:.80}")
        role, content = turn["role"], turn["content"]
        if role not in ROLES:
            raise DataError(where, f"turn {i} has unknown role {role!r}",
                            f"roles are {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise DataError(where, f"turn {i} ({role}) has empty or non-text content")
        messages.append({"role": role, "content": content})
    if not answered:
        return _prompt_only(messages, spec, where)
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(where, "the conversation has no assistant turn: nothing to learn",
                        "data.on_error=skip drops (and counts) such rows")
    if spec.system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": spec.system})
    return messages


def _prompt_only(messages: list[dict[str, str]], spec: ChatSpec, where: str
                 ) -> list[dict[str, str]]:
    """The turns up to the last user turn (a trailing answer is not the prompt's)."""
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise DataError(where, "the conversation has no user turn: no prompt to answer",
                        "data.on_error=skip drops (and counts) such rows")
    messages = messages[:users[-1] + 1]
    if spec.system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": spec.system})
    return messages


def prompt_text(messages: list[dict[str, str]]) -> str:
    """A conversation's prompt side (system and user turns): what groups one prompt's rows
    (the validation split, leakage checks, slices)."""
    return "\n".join(m["content"] for m in messages if m["role"] != "assistant")


def render(tokenizer: Any, messages: list[dict[str, str]], template: str | None = None
           ) -> tuple[str, list[tuple[int, int]]]:
    """(the conversation's text, character spans of each assistant turn incl. its closing)."""
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise ConfigError("task.chat_template", f"the tokenizer "
                          f"({getattr(tokenizer, 'name_or_path', '') or 'given'}) has no chat "
                          "template and none is configured: chats cannot be rendered",
                          "set task.chat_template to a Jinja template (ChatML, for example), "
                          "or use a chat model's tokenizer (model.tokenizer)")

    def text(turns: list[dict[str, str]], prompt: bool) -> str:
        return tokenizer.apply_chat_template(turns, tokenize=False, chat_template=template,
                                             add_generation_prompt=prompt)

    full = text(messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start, through = text(messages[:i], True), text(messages[:i + 1], False)
        if not (full.startswith(start) and full.startswith(through) and
                len(through) > len(start)):
            raise ConfigError("data.chat", "the chat template cannot mark assistant turns: "
                              "rendering the turns before an answer does not give a prefix "
                              "of the whole conversation",
                              "pass a template that renders turn by turn (task.chat_template)")
        spans.append((len(start), len(through.rstrip())))  # not the newline after it
    return full, spans


def encode(tokenizer: Any, messages: list[dict[str, str]], max_length: int,
           train_on_prompt: bool = False, template: str | None = None) -> dict[str, Any]:
    """Token ids and labels (``IGNORE`` outside assistant turns), truncated to ``max_length``.

    Returns ``input_ids``, ``labels``, ``truncated_tokens`` (cut from the right) and
    ``answer_tokens`` kept; a prompt that fills ``max_length`` before any answer token leaves
    ``answer_tokens == 0`` for the caller to count and drop.
    """
    full, spans = render(tokenizer, messages, template)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = []
    for token, (begin, end) in zip(ids, offsets, strict=True):
        answer = any(begin < stop and end > start for start, stop in spans)
        labels.append(token if answer or train_on_prompt else IGNORE)
    if not any(label != IGNORE for label in labels):
        raise ConfigError("data.chat", "no token of the rendered conversation falls in an "
                          "assistant turn", "check the chat template")
    cut = max(0, len(ids) - max_length)
    ids, labels = ids[:max_length], labels[:max_length]
    answer_tokens = sum(1 for label in labels if label != IGNORE) if not train_on_prompt \
        else sum(1 for (b, e) in offsets[:max_length] if any(b < s2 and e > s1
                                                              for s1, s2 in spans))
    return {"input_ids": ids, "labels": labels, "truncated_tokens": cut,
            "answer_tokens": answer_tokens}
