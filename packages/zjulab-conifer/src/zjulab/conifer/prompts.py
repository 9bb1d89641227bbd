"""Prompt templates of the curation stages.

Each template is a plain ``str.format`` pattern; a stage fills it and appends nothing else, so
the JSON shape the model must answer with is stated in the template itself. Users replace a
template by passing ``template=`` to the stage (the placeholders must stay).
"""

from __future__ import annotations

__all__ = [
    "ANSWER_SYSTEM",
    "ANSWER_WITH_PROCESS",
    "CONSTRAINTS",
    "EXTERNAL_FEEDBACK",
    "FILTER_INSTRUCTION",
    "FILTER_QUERY",
    "FORMAT_NUMBER_REWRITE",
    "INTERNAL_FEEDBACK",
    "RECOMBINE",
    "REFRAME",
]

REFRAME = (
    "Here is a request a user once sent to an assistant:\n{seed}\n\n"
    "Write {n} new, self-contained questions about the same subject. Each must make sense on its "
    "own and leave room for extra requirements (audience, scope, style, format, length).\n"
    'Reply with JSON only, like {{"questions": ["first question", "second question"]}}'
)

FILTER_QUERY = (
    "Question:\n{query}\n\n"
    "Is this a clear, self-contained question that an expert could answer, and that could be "
    "made harder by adding requirements?\n"
    'Reply with JSON only, like {{"keep": true, "reason": "short reason"}}'
)

CONSTRAINTS = (
    "Question:\n{query}\n\n"
    "List the kinds of requirements a user could add to this question, for example content focus, "
    "audience, style, format and length. Give {min_categories} to {max_categories} kinds, each "
    "with 2 to 4 concrete options.\n"
    'Reply with JSON only, like {{"categories": {{"Audience": ["beginners", "experts"], '
    '"Format": ["bullet points", "a table"]}}}}'
)

RECOMBINE = (
    "Question:\n{query}\n\nPossible requirements:\n{constraints}\n\n"
    "Rewrite the question {levels} times with growing difficulty: version 1 adds one requirement, "
    "each later version combines more of them, version {levels} combines many. Every version is "
    "one natural request.\n"
    'Reply with JSON only, like {{"levels": ["version 1", "version 2"]}} with exactly {levels} items'
)

FILTER_INSTRUCTION = (
    "Instruction:\n{instruction}\n\n"
    "Are the requirements of this instruction consistent with each other, and can it be "
    "answered well?\n"
    'Reply with JSON only, like {{"keep": true, "reason": "short reason"}}'
)

ANSWER_SYSTEM = "You are a careful assistant. Follow every requirement of the request exactly."

INTERNAL_FEEDBACK = (
    "Instruction:\n{instruction}\n\nAnswer:\n{answer}\n\n"
    "Go through the requirements of the instruction one by one and say how the answer meets "
    "each of them.\n"
    'Reply with JSON only, like {{"steps": ["requirement: how the answer meets it"]}}'
)

EXTERNAL_FEEDBACK = (
    "Instruction:\n{instruction}\n\nReference answer:\n{reference}\n\nCandidate answer:\n{candidate}\n\n"
    "Does the candidate answer meet every requirement of the instruction? If not, say precisely "
    "which requirements it misses and how to fix them.\n"
    'Reply with JSON only, like {{"follows": false, "feedback": "what is missing"}}'
)

FORMAT_NUMBER_REWRITE = (
    "Instruction:\n{instruction}\n\nCandidate constraints:\n{constraints}\n\n"
    "Pick one to three of the candidate constraints that do not conflict with each other or with "
    'the instruction, and append them to the end of the instruction, introduced by "The answer '
    'must follow these constraints:". Where a constraint offers numbers in square brackets, '
    "choose one of them. Change the instruction itself as little as possible.\n"
    'Reply with JSON only, like {{"instruction": "the instruction with the constraints appended"}}'
)

ANSWER_WITH_PROCESS = (
    "Answer the instruction below, keeping to every constraint it states on the subject, the "
    "content and the form of the answer. After the answer, explain briefly how you met each "
    "numerical and format constraint.\n\nInstruction:\n{instruction}"
)
