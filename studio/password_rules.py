"""What a new account's password must be: long enough, not the user name, not a well-known password.

The list below is short on purpose: the passwords that lead every published leak ranking (and their
obvious studio-flavoured cousins). A password is compared lower-cased and with the digits and symbols
people tack on at either end removed, so ``Password123!`` and ``!qwerty`` count as well known too.
"""
from __future__ import annotations

import re

MIN_LENGTH = 8
MAX_LENGTH = 1024  # scrypt hashes anything; this only bounds the work one request can ask for

_COMMON_TEXT = """
password passw0rd pass1234 password1 letmein welcome welcome1 admin administrator root toor qwerty qwertyuiop
qwertz azerty asdfgh asdfghjkl zxcvbnm iloveyou monkey dragon master sunshine princess football baseball
superman batman trustno1 whatever shadow michael jennifer hunter ranger buster soccer hockey killer
charlie jordan harley computer internet starwars freedom secret changeme default login access guest
test tester testing abc abcdef abcdefgh abcd1234 qazwsx 1q2w3e4r 1qaz2wsx zaq12wsx aaaaaa
aaaaaaaa 11111111 00000000 12345678 123456789 1234567890 87654321 123123123 987654321 11223344
studio finetune finetunestudio gradio huggingface llama openai chatgpt machinelearning
"""
COMMON = frozenset(_COMMON_TEXT.split())

_EDGES = re.compile(r"^[\d\W_]+|[\d\W_]+$")


def _core(text: str) -> str:
    """Lower-cased, without the digits and symbols at either end (``Alice2024!`` -> ``alice``)."""
    stripped = _EDGES.sub("", text.lower())
    return stripped or text.lower()


def problem(name: str, password: str) -> str | None:
    """Why ``password`` may not be ``name``'s (None: it may)."""
    if len(password) < MIN_LENGTH:
        return f"the password is {len(password)} characters; use at least {MIN_LENGTH}"
    if len(password) > MAX_LENGTH:
        return f"the password is {len(password)} characters; use at most {MAX_LENGTH}"
    core, user = _core(password), _core(name)
    if core == user or core == user[::-1] or password.lower() == name.lower():
        return "the password is the user name (or close to it); choose one nobody could guess from the name"
    if core in COMMON or password.lower() in COMMON:
        return "the password is one of the most common passwords; choose another (a few unrelated words work well)"
    if len(set(password)) < 3:
        return "the password repeats one or two characters; choose another"
    return None
