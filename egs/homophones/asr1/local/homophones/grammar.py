"""A tiny weighted context-free grammar engine for the synthetic corpus.

Why a grammar and not templates with string formatting: the same rules must be expanded with and without some words
(paired training text never contains the "LM-only" words), so the engine can *prune* a grammar against a set of
excluded words (an alternative that needs an excluded word disappears, recursively) and still expand it.

Rule syntax (one string per alternative, in `Dict[str, Sequence[str]]`):

    WORD          a terminal (upper case; apostrophes allowed: THEY'RE, O'CLOCK)
    {NAME}        a nonterminal
    (a b | c)     an inline choice between word sequences
    [a b]         an optional sequence (taken with probability 1/2)
    3* a b        (prefix of an alternative) weight 3 instead of 1

Expansion is driven by a `random.Random`, so a seed fixes the output. After expansion the article "A" becomes "AN"
before a vowel sound ("AN HOUR", "AN OLD BOOK"), so rules can always write "A".
"""
from __future__ import annotations

import bisect
import random
import re
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple, Union

_TOKEN = re.compile(r"\{[A-Z0-9_]+\}|[()\[\]|]|[A-Z][A-Z']*|\S+")
_WEIGHT = re.compile(r"^\s*(\d+)\*\s*")


class GrammarError(ValueError):
    """A rule that cannot be parsed, names an unknown nonterminal, or has nothing left after pruning."""


@dataclass(frozen=True)
class Word:
    text: str


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Seq:
    items: Tuple["Node", ...]


@dataclass(frozen=True)
class Choice:
    options: Tuple[Seq, ...]
    weights: Tuple[float, ...]


@dataclass(frozen=True)
class Optional_:
    body: Seq


Node = Union[Word, Ref, Seq, Choice, Optional_]


def _parse_alternative(text: str) -> Tuple[Seq, float]:
    """Parse one alternative (with its optional `N*` weight prefix) into a sequence node."""
    weight = 1.0
    m = _WEIGHT.match(text)
    if m:
        weight = float(m.group(1))
        text = text[m.end():]
    tokens = _TOKEN.findall(text)
    pos = 0

    def seq(stop: Set[str]) -> Seq:
        nonlocal pos
        items: List[Node] = []
        while pos < len(tokens) and tokens[pos] not in stop:
            tok = tokens[pos]
            pos += 1
            if tok == "(":
                options = [seq({"|", ")"})]
                while pos < len(tokens) and tokens[pos] == "|":
                    pos += 1
                    options.append(seq({"|", ")"}))
                _expect(")")
                items.append(Choice(tuple(options), tuple(1.0 for _ in options)))
            elif tok == "[":
                body = seq({"]"})
                _expect("]")
                items.append(Optional_(body))
            elif tok.startswith("{"):
                items.append(Ref(tok[1:-1]))
            elif re.fullmatch(r"[A-Z][A-Z']*", tok):
                items.append(Word(tok))
            else:
                raise GrammarError(f"bad token {tok!r} in rule alternative {text!r}")
        return Seq(tuple(items))

    def _expect(tok: str) -> None:
        nonlocal pos
        if pos >= len(tokens) or tokens[pos] != tok:
            raise GrammarError(f"expected {tok!r} in rule alternative {text!r}")
        pos += 1

    node = seq(set())
    if pos != len(tokens):
        raise GrammarError(f"unbalanced brackets in rule alternative {text!r}")
    return node, weight


def _leaves(node: Node) -> Iterable[Node]:
    """The Word and Ref leaves of a rule tree, in order."""
    if isinstance(node, (Word, Ref)):
        yield node
    elif isinstance(node, (Seq, Choice)):
        for child in node.items if isinstance(node, Seq) else node.options:
            yield from _leaves(child)
    elif isinstance(node, Optional_):
        yield from _leaves(node.body)


def _walk_words(node: Node) -> Iterable[str]:
    return (leaf.text for leaf in _leaves(node) if isinstance(leaf, Word))


def _walk_refs(node: Node) -> Iterable[str]:
    return (leaf.name for leaf in _leaves(node) if isinstance(leaf, Ref))


# Words after which the article is "AN" although they start with a consonant letter, and vice versa.
_AN_EXCEPTIONS = {"HOUR", "HOURS", "HONEST", "HEIR"}
_A_EXCEPTIONS_PREFIXES = ("ONE", "ONCE", "UNI", "USE", "USU", "EU", "UKU")


def fix_articles(words: List[str]) -> List[str]:
    """Turn the article A into AN before a vowel sound (A OLD BOOK -> AN OLD BOOK, A HOUR -> AN HOUR)."""
    out = list(words)
    for i in range(len(out) - 1):
        if out[i] not in ("A", "AN"):
            continue
        nxt = out[i + 1]
        vowel = (nxt[0] in "AEIOU" and not nxt.startswith(_A_EXCEPTIONS_PREFIXES)) or nxt in _AN_EXCEPTIONS
        out[i] = "AN" if vowel else "A"
    return out


class Grammar:
    """A compiled grammar: parse once, prune against excluded words, expand many times."""

    def __init__(self, rules: Dict[str, Sequence[str]], start: str = "S") -> None:
        self.start = start
        self._rules: Dict[str, Choice] = {}
        for name, alternatives in rules.items():
            if not alternatives:
                raise GrammarError(f"rule {name} has no alternatives")
            parsed = [_parse_alternative(a) for a in alternatives]
            self._rules[name] = Choice(tuple(p[0] for p in parsed), tuple(p[1] for p in parsed))
        unknown = {r for c in self._rules.values() for r in _walk_refs(c)} - set(self._rules)
        if unknown:
            raise GrammarError(f"unknown nonterminals: {sorted(unknown)}")
        if start not in self._rules:
            raise GrammarError(f"no start rule {start!r}")
        self._cum: Dict[int, List[float]] = {}

    # ---------------------------------------------------------------------------------------------------------
    def terminals(self) -> FrozenSet[str]:
        """Every word the grammar can produce (plus AN, which article fixing introduces)."""
        words = {w for c in self._rules.values() for w in _walk_words(c)}
        return frozenset(words | {"AN"})

    def literal_words(self, rule_names: Iterable[str]) -> FrozenSet[str]:
        """Words written directly in the given rules (not through nonterminals)."""
        return frozenset(w for n in rule_names for w in _walk_words(self._rules[n]))

    def rule_names(self) -> List[str]:
        return list(self._rules)

    # ---------------------------------------------------------------------------------------------------------
    def pruned(self, excluded: Iterable[str]) -> "Grammar":
        """A copy that can never produce an excluded word. Alternatives needing one are dropped, recursively;
        raises GrammarError if the start rule has nothing left."""
        excluded = frozenset(excluded)
        valid: Dict[str, Optional[Choice]] = {}
        # Fixpoint: a rule is valid once at least one alternative only needs valid rules and allowed words.
        changed = True
        current: Dict[str, bool] = {name: True for name in self._rules}
        while changed:
            changed = False
            for name, choice in self._rules.items():
                ok = self._prune_node(choice, excluded, current) is not None
                if current[name] != ok:
                    current[name] = ok
                    changed = True
        for name, choice in self._rules.items():
            valid[name] = self._prune_node(choice, excluded, current) if current[name] else None
        if valid[self.start] is None:
            raise GrammarError(f"excluding {sorted(excluded)[:10]}... leaves nothing to generate")
        g = Grammar.__new__(Grammar)
        g.start = self.start
        g._rules = {n: c for n, c in valid.items() if c is not None}  # type: ignore[misc]
        g._cum = {}
        return g

    def _prune_node(self, node: Node, excluded: FrozenSet[str], ok: Dict[str, bool]) -> Optional[Node]:
        if isinstance(node, Word):
            return None if node.text in excluded else node
        if isinstance(node, Ref):
            return node if ok.get(node.name, False) else None
        if isinstance(node, Seq):
            items = []
            for item in node.items:
                p = self._prune_node(item, excluded, ok)
                if p is None:
                    return None
                items.append(p)
            return Seq(tuple(items))
        if isinstance(node, Optional_):
            body = self._prune_node(node.body, excluded, ok)
            return Optional_(body) if body is not None else Seq(())  # type: ignore[arg-type]
        if isinstance(node, Choice):
            kept = [(self._prune_node(o, excluded, ok), w) for o, w in zip(node.options, node.weights)]
            kept = [(o, w) for o, w in kept if o is not None]
            if not kept:
                return None
            return Choice(tuple(o for o, _ in kept), tuple(w for _, w in kept))  # type: ignore[misc]
        raise TypeError(node)

    # ---------------------------------------------------------------------------------------------------------
    def generate(self, rng: random.Random, rule: Optional[str] = None) -> str:
        """One sentence: space-separated upper-case words."""
        words: List[str] = []
        self._expand(self._rules[rule or self.start], rng, words, depth=0)
        return " ".join(fix_articles(words))

    def _pick(self, choice: Choice, rng: random.Random) -> Seq:
        if len(choice.options) == 1:
            return choice.options[0]
        cum = self._cum.get(id(choice))
        if cum is None:
            cum, total = [], 0.0
            for w in choice.weights:
                total += w
                cum.append(total)
            self._cum[id(choice)] = cum
        return choice.options[bisect.bisect_right(cum, rng.random() * cum[-1])]

    def _expand(self, node: Node, rng: random.Random, out: List[str], depth: int) -> None:
        if depth > 50:
            raise GrammarError("recursion too deep: is a rule referring to itself?")
        if isinstance(node, Word):
            out.append(node.text)
        elif isinstance(node, Ref):
            self._expand(self._rules[node.name], rng, out, depth + 1)
        elif isinstance(node, Seq):
            for item in node.items:
                self._expand(item, rng, out, depth + 1)
        elif isinstance(node, Choice):
            self._expand(self._pick(node, rng), rng, out, depth + 1)
        elif isinstance(node, Optional_):
            if rng.random() < 0.5:
                self._expand(node.body, rng, out, depth + 1)
        else:  # pragma: no cover
            raise TypeError(node)
