"""ZoomEye (Shen et al., 2024) as its public code runs it: tree search over zoomed views.

The image is a tree of sub-patches (:func:`build_tree`). Per question, the model names its
visual cues by one in-context greedy generation (:func:`cue_prompt`, :func:`parse_cues`); a
cue is searched best-first (type 1, :func:`type1_search`) or, for an ``"all X"`` cue, by a
post-order pass over the top levels (type 2, :func:`type2_search`). Node scores are Yes/No
confidences ``2 p(Yes) - 1`` (Eq. 5's :class:`~focus_modules.modules.existence.ExistenceScorer`)
of the existence, latent and answering-confidence prompts on the node's view.

The searches are generators: each yields the prompts it needs next and receives their
confidences, so :class:`ZoomEye` runs every cue of every question of a group in lockstep and
sends each round's prompts (e.g. the children of one expansion of every question) to the
model as one batched call. docs/baselines.md lists where this follows ZoomEye's code rather
than its paper and where it departs from both.

Forward passes (one per prompt, charged to the prompt's question): ``"targets"`` the cue
generation (1); ``"search"`` the early-exit answering confidences (1 per plain cue of a
question with >= 2 cues, global-local models), and per type-1 search 1 answering confidence
per popped node (the root excepted where ZoomEye skips it) plus 2 (existence, latent) per
node put in the queue, per type-2 search 1 existence confidence per node of depth <= 2.
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from focus_modules.adapters.base import EXISTENCE_TEMPLATE, FinalView, ModelAdapter
from focus_modules.adapters.views import Box, crop, draw_boxes, merge_overlapping, union_box
from focus_modules.baselines.base import SearchMethod, SearchTask
from focus_modules.modules.existence import ExistenceScorer
from focus_modules.results import Roi, charge_batch

# --- ZoomEye's prompts (ZoomEye/zoom_model.py, ic_examples/vstar.json), verbatim -----------------

CUE_QUESTION_TEMPLATE = "Question: {}\nIf you want to answer the question, which objects' information do you need?"
CUE_EXAMPLES = (
    (
        "What is the color of the boy's bag?",
        "To answer the question, I need know the location of the boy with a bag so that I can determine the "
        "color of the bag. So I need the information about the following objects: boy with a bag.",
    ),
    (
        "Is the yellow car on the left or right side of the white car?",
        "To answer the question, I need know the location of the yellow car and the white car so that I can "
        "determine the positional relationship between the two of them. So I need the information about the "
        "following objects: white car and yellow car.",
    ),
    (
        "Tell me the number on the black board.",
        "To answer the question, I need know the location of the black board so that I can determine the "
        "number on it. So I need the information about the following objects: black board",
    ),
    (
        "Is the girl with pink hair on the left or right side of the man with backpack?",
        "To answer the question, I need know the location of the girl with pink hair and the man with backpack "
        "so that I can determine the positional relationship between the two of them. So I need the "
        "information about the following objects: girl with pink hair and man with backpack.",
    ),
    (
        "What kind of animal is on the red sign?",
        "To answer the question, I need know the location of the red sign so that I can determine the kind of "
        "animal on it. So I need the information about the following objects: red sign.",
    ),
    (
        "From the information on that advertising board, what is the type of this shop?",
        "To answer the question, I need know the location of the advertising board so that I can determine "
        "the type of the shop. So I need the information about the following objects: advertising board.",
    ),
)
CUE_PATTERN = re.compile(r"So I need the information about the following objects: (.+)")
CUE_SEPARATOR = re.compile(r" and |, ")
# ZoomEye drops cues containing a pronoun (spaCy POS tags, e.g. "his bag" of "man and his bag");
# without spaCy, a fixed list of English pronouns stands in.
PRONOUNS = frozenset(
    "i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its "
    "itself we us our ours ourselves they them their theirs themselves this that these those who whom whose "
    "which what something anything nothing someone anyone everyone everything".split()
)
TYPE2_PREFIX = "all "
# The question asked of each cue of a multi-cue question (ZoomEye's decomposed_question_template).
DECOMPOSED_QUESTION_TEMPLATE = "What is the appearance of the {}?"
# One view (the whole image, or a crop): ZoomEye's "global" prompts.
LATENT_TEMPLATE = (
    "According to your common sense knowledge and the content of image, is it possible to find a {} by "
    "further zooming in the image? Answer Yes or No and tell the reason."
)
# LLaVA-1.5 (ZoomEyeLocal) words its latent prompt differently.
LOCAL_LATENT_TEMPLATE = (
    "According to your common sense knowledge and the content of the image, is it possible to find a {} in "
    "the image? Answer Yes or No and tell the reason."
)
ANSWERING_TEMPLATE = (
    "Question: {}\nCould you answer the question based on the the available visual information? Answer Yes or No."
)
# Two views (the image with the node outlined, then the node's zoomed-in crop): "zoom" prompts.
ZOOM_EXISTENCE_TEMPLATE = "Is there a {} in the zoomed-in view? Answer Yes or No."
ZOOM_LATENT_TEMPLATE = (
    "According to your common sense knowledge and the content of the zoomed-in view, along with its location "
    "in the image, is it possible to find a {} by further zooming in the current view? Answer Yes or No and "
    "tell the reason."
)

# --- ZoomEye's search constants (ZoomEye/zoom_eye.py, eval/perform_zoom_eye.py) ----------------

# ZoomEye's merge_bbox_list: boxes closer than this many pixels are merged (intersect_bbox's buffer).
MERGE_BUFFER = 50


DEPTH_LIMIT = 5  # type-1 search depth cap D = min(tree depth, 5)
POPS_PER_LEVEL = 3  # pop budget 3 D
BUDGET_STEP = 2  # pops added each time tau_up is lowered
TYPE2_DEPTH = 2
TYPE2_THRESHOLD = 0.6  # visual_cue_threshold
# Outline of the node on the main image of a two-view prompt (the final views' colour).
OUTLINE = (255, 0, 0)


@dataclass(frozen=True)
class ZoomEyeSettings:
    """ZoomEye's per-model settings.

    Attributes:
        bias: ``b`` of the priority weight ``w = b + (1 - b) (d / D)^2``.
        answer_upper: ``tau_up``: a popped node whose answering confidence reaches it ends
            the search.
        answer_lower: ``tau_low``: the search gives up when ``tau_up`` falls below it.
        decrements: how ``tau_up`` is lowered each time the pop budget runs out (the last
            value repeats).
        patch_scale: the chosen box is widened to at least the view size, times this
            (``None``: 1).
        global_local: True for models that see a global view plus local tiles (ZoomEye's
            ``ZoomModelGlobalLocal``): a node is shown as the image with the node outlined plus
            the zoomed crop, the final answer likewise, and multi-cue questions may exit early.
            False (``ZoomModelLocal``): a node is shown as its crop alone.
        view_size: the smallest patch side (pixels): nodes with both sides below it are not
            split; ``None`` takes the adapter's :attr:`~ModelAdapter.native_view_size`.
    """

    bias: float
    answer_upper: float
    answer_lower: float
    decrements: tuple[float, ...]
    patch_scale: float | None
    global_local: bool
    view_size: int | None = None


# Per adapter family. LLaVA-1.5 and OneVision: eval/perform_zoom_eye.py; Qwen2.5-VL (448-pixel
# patches hard-coded) and InternVL: ZoomEye's settings for those models. Qwen3-VL takes
# Qwen2.5-VL's, Gemma 3 (one fixed-size view, like LLaVA-1.5) LLaVA-1.5's: ZoomEye has none.
ZOOMEYE_SETTINGS = {
    "llava-1.5": ZoomEyeSettings(0.2, 0.6, 0.0, (0.1, 0.1, 0.2), None, global_local=False),
    "llava-onevision": ZoomEyeSettings(0.6, 0.6, 0.0, (0.1, 0.1, 0.2), 1.2, global_local=True),
    "qwen2.5-vl": ZoomEyeSettings(0.6, 0.95, 0.0, (0.05, 0.1, 0.2), 1.2, global_local=True, view_size=448),
    "qwen3-vl": ZoomEyeSettings(0.6, 0.95, 0.0, (0.05, 0.1, 0.2), 1.2, global_local=True, view_size=448),
    "internvl": ZoomEyeSettings(0.6, 0.2, -0.2, (0.1, 0.1, 0.2), 1.2, global_local=True),
    "gemma3": ZoomEyeSettings(0.2, 0.6, 0.0, (0.1, 0.1, 0.2), None, global_local=False),
}


# --- the image tree ------------------------------------------------------------------------------


@dataclass(eq=False)
class Node:
    """A sub-patch of the image.

    Attributes:
        box: ``(x, y, w, h)`` integer pixels of the image (ZoomEye's xywh).
        depth: 0 for the root.
        children: its sub-patches, row-major.
        priority: ``w c_exist + (1 - w) c_latent`` once scored (type 1), or the existence
            confidence (type 2); ``None`` before.
        answering: answering confidence once popped (the root starts at -1, as in ZoomEye).
    """

    box: tuple[int, int, int, int]
    depth: int = 0
    children: list[Node] = field(default_factory=list)
    priority: float | None = None
    answering: float | None = None

    @property
    def xyxy(self) -> Box:
        x, y, w, h = self.box
        return (float(x), float(y), float(x + w), float(y + h))


def split_counts(width: int, height: int) -> tuple[int, int]:
    """``(columns, rows)`` of a node's children: 1 x 4 when it is at least twice as high as
    wide, 4 x 1 when at least twice as wide as high, else 2 x 2 (ZoomEye's split_4subpatches)."""
    ratio = height / width
    if ratio >= 2:
        return 1, 4
    if ratio <= 0.5:
        return 4, 1
    return 2, 2


def sub_patches(box: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
    """The children of an ``(x, y, w, h)`` patch, row-major; the last column / row takes the
    remainder (ZoomEye's get_sub_patches)."""
    x, y, w, h = box
    cols, rows = split_counts(w, h)
    sw, sh = w // cols, h // rows
    return [
        (
            x + i * sw,
            y + j * sh,
            w - i * sw if i == cols - 1 else sw,
            h - j * sh if j == rows - 1 else sh,
        )
        for j in range(rows)
        for i in range(cols)
    ]


def build_tree(width: int, height: int, patch_size: int) -> tuple[Node, int]:
    """The whole image tree: a node is split until both its sides are below ``patch_size``.

    Returns:
        the root and the depth of the deepest node (the whole tree's, before the search's
        cap of :data:`DEPTH_LIMIT`).
    """
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    root = Node((0, 0, width, height))
    deepest, stack = 0, [root]
    while stack:
        node = stack.pop()
        deepest = max(deepest, node.depth)
        if max(node.box[2], node.box[3]) < patch_size:
            continue
        node.children = [Node(box, node.depth + 1) for box in sub_patches(node.box)]
        stack.extend(node.children)
    return root, deepest


def priority_weight(depth: int, tree_depth: int, bias: float) -> float:
    """``w = b + (1 - b) (d / D)^2``: the existence confidence's share of a node's priority,
    rising from ``b`` at the root to 1 at depth ``D`` (``D`` = the whole tree's depth, as
    ZoomEye's get_confidence_weight)."""
    return bias + (1 - bias) * (depth / tree_depth) ** 2 if tree_depth > 0 else 1.0


def node_priority(existence: float, latent: float, weight: float) -> float:
    """ZoomEye's ranking: ``w c_exist + (1 - w) c_latent``."""
    return weight * existence + (1 - weight) * latent


def patch_box(node: Node, width: int, height: int, view_size: int, patch_scale: float | None) -> Box:
    """The box shown for a node: its centre, at least ``view_size`` wide and high (times
    ``patch_scale``), clipped at the image's right and bottom (ZoomEye's get_patch)."""
    x, y, w, h = node.box
    pw, ph = max(w, view_size), max(h, view_size)
    if patch_scale is not None:
        pw, ph = int(pw * patch_scale), int(ph * patch_scale)
    left, top = max(0, int(x + w / 2) - pw // 2), max(0, int(y + h / 2) - ph // 2)
    return (float(left), float(top), float(min(left + pw, width)), float(min(top + ph, height)))


# --- cues ------------------------------------------------------------------------------------------


def cue_prompt(question: str) -> str:
    """The in-context prompt of the cue generation: ZoomEye's six examples, then the question."""
    turns = [f"{CUE_QUESTION_TEMPLATE.format(q)}\n{a}" for q, a in CUE_EXAMPLES]
    return "\n\n".join([*turns, CUE_QUESTION_TEMPLATE.format(question)])


def parse_cues(reply: str) -> list[str]:
    """The visual cues of a reply (ZoomEye's extract_targets + split_targets_sentence), those
    with a pronoun dropped; ``[]`` when the reply does not name any."""
    match = CUE_PATTERN.search(reply)
    if not match:
        return []
    sentence = match.group(1)
    if sentence.endswith("."):
        sentence = sentence[:-1]
    cues = [cue.strip() for cue in CUE_SEPARATOR.split(sentence)]
    return [cue for cue in cues if cue and not any(word in PRONOUNS for word in re.findall(r"[a-z']+", cue.lower()))]


def type2_object(cue: str) -> str:
    """The object of an ``"all X"`` cue, a final "s" dropped (ZoomEye's crude singular)."""
    target = cue[len(TYPE2_PREFIX) :]
    return target[:-1] if target.endswith("s") else target


# --- the searches ------------------------------------------------------------------------------------
# A search yields requests, lists of (node, kind, text) with kind "existence", "latent" or
# "answering", and is sent back one confidence per item.

Request = list[tuple[Node, str, str]]
Search = Generator[Request, list[float], Any]


@dataclass
class Type1Trace:
    """What one type-1 search did (for tests and docs): ``pops`` nodes popped, ``scored``
    nodes given a priority, ``answered`` answering confidences computed."""

    pops: int = 0
    scored: int = 0
    answered: int = 0


def type1_search(
    root: Node,
    tree_depth: int,
    cue: str,
    question: str,
    settings: ZoomEyeSettings,
    skip_root: bool,
    visit_bottom: bool,
    trace: Type1Trace,
) -> Search:
    """ZoomEye's best-first search for one cue (zoom_eye_search_type1); returns the deepest
    candidate node, or ``None``.

    Args:
        root: the image tree.
        tree_depth: depth of the whole tree (the priority weight's ``D``).
        cue: the visual cue (existence and latent prompts).
        question: the answering-confidence question.
        settings: the model's settings.
        skip_root: no answering confidence at the root (force_no_root).
        visit_bottom: keep searching after a candidate until a leaf was reached
            (force_visit_bottom).
        trace: counts of what was done, filled in.
    """
    depth_cap = min(tree_depth, DEPTH_LIMIT)
    budget = POPS_PER_LEVEL * depth_cap
    upper, decrements = settings.answer_upper, list(settings.decrements)
    queue, popped, candidates = [root], [], []
    root.answering = -1.0
    reached_bottom = False
    while queue:
        node = queue.pop(0)
        trace.pops += 1
        popped.append(node)
        stop = False
        if not (skip_root and node.depth == 0):
            [node.answering] = yield [(node, "answering", question)]
            trace.answered += 1
            stop = node.answering >= upper
        if stop:
            candidates.append(node)
            if not visit_bottom or reached_bottom:
                break
        elif trace.pops >= budget:
            upper -= decrements[0]
            if len(decrements) > 1:
                decrements.pop(0)
            budget += BUDGET_STEP
            candidates = _best_answered(popped, candidates, upper)
            if candidates or upper < settings.answer_lower:
                break
        if not node.children or node.depth == depth_cap:
            reached_bottom = True
            if visit_bottom and candidates:
                break
        else:
            queue.extend(node.children)
        unscored = [n for n in queue if n.priority is None]
        if unscored:
            request = [(n, kind, cue) for n in unscored for kind in ("existence", "latent")]
            scores = yield request
            for i, n in enumerate(unscored):
                weight = priority_weight(n.depth, tree_depth, settings.bias)
                n.priority = node_priority(scores[2 * i], scores[2 * i + 1], weight)
            trace.scored += len(unscored)
        queue.sort(key=lambda n: n.priority, reverse=True)  # stable: ties keep queue order
    return max(candidates, key=lambda n: n.depth) if candidates else None


def _best_answered(popped: list[Node], candidates: list[Node], threshold: float) -> list[Node]:
    """ZoomEye's update_candidates: add popped nodes whose answering confidence reaches the
    lowered threshold; keep the best one."""
    found = candidates + [
        n for n in popped if n.answering is not None and n.answering >= threshold and n not in candidates
    ]
    if len(found) > 1:
        found = sorted(found, key=lambda n: n.answering, reverse=True)[:1]
    return found


def type2_nodes(root: Node) -> list[Node]:
    """The nodes of depth <= :data:`TYPE2_DEPTH`, in post order."""
    order: list[Node] = []

    def visit(node: Node) -> None:
        if node.depth < TYPE2_DEPTH:
            for child in node.children:
                visit(child)
        order.append(node)

    visit(root)
    return order


def type2_search(root: Node, cue: str) -> Search:
    """ZoomEye's search for an ``"all X"`` cue (zoom_eye_search_type2): the existence
    confidence of every node of depth <= 2 (one request), then, in post order, a node is kept
    when its confidence reaches both :data:`TYPE2_THRESHOLD` and the best of its descendants.
    Returns the kept nodes."""
    nodes = type2_nodes(root)
    scores = yield [(n, "existence", cue) for n in nodes]
    for node, score in zip(nodes, scores):
        node.priority = score
    kept: list[Node] = []

    def best_below(node: Node) -> float:
        best = -1.0
        if node.depth < TYPE2_DEPTH:
            for child in node.children:
                best = max(best, best_below(child))
        if node.priority >= max(best, TYPE2_THRESHOLD):
            kept.append(node)
        return max(best, node.priority)

    best_below(root)
    return kept


@dataclass
class QuestionTrace:
    """What ZoomEye did for one question: ``early_exit`` answering confidences of the early
    exit, one :class:`Type1Trace` per plain cue searched, ``type2_scored`` nodes scored by
    type-2 searches."""

    early_exit: int = 0
    type1: list[Type1Trace] = field(default_factory=list)
    type2_scored: int = 0

    @property
    def passes(self) -> int:
        """The question's "search" forward passes: one per prompt."""
        return self.early_exit + sum(t.answered + 2 * t.scored for t in self.type1) + self.type2_scored


# --- the method ----------------------------------------------------------------------------------------


@dataclass
class _Run:
    """One running search of one question."""

    task: SearchTask
    search: Search
    request: Request | None = None
    outcome: Any = None
    done: bool = False


class ZoomEye(SearchMethod):
    """ZoomEye in FOCUS's harness (see the module docstring).

    Args:
        adapter: the model's adapter.
        settings: the model's :class:`ZoomEyeSettings` (default: :data:`ZOOMEYE_SETTINGS` of
            the adapter's family).
        cue_max_new_tokens: generation budget of the cue generation (ZoomEye: 256).
    """

    name = "zoomeye"
    phases = ("targets", "search")

    def __init__(
        self, adapter: ModelAdapter, settings: ZoomEyeSettings | None = None, cue_max_new_tokens: int = 256
    ) -> None:
        super().__init__(adapter)
        if settings is None:
            if adapter.family not in ZOOMEYE_SETTINGS:
                raise ValueError(f"ZoomEye has no settings for the {adapter.family!r} family; pass settings=")
            settings = ZOOMEYE_SETTINGS[adapter.family]
        self.settings = settings
        self.cue_max_new_tokens = cue_max_new_tokens
        self.scorer = ExistenceScorer(*adapter.yes_no_ids())
        #: per question of the last :meth:`search` (in order): what its search did.
        self.traces: list[QuestionTrace] = []

    @property
    def view_size(self) -> int:
        return self.settings.view_size or self.adapter.native_view_size

    def search(self, tasks: Sequence[SearchTask]) -> None:
        """Cues, early exit, tree searches and the final view of every task, in batched rounds."""
        cues = self._cues(tasks)
        self.traces = [QuestionTrace() for _ in tasks]
        for task, task_cues in zip(tasks, cues):
            task.result.targets = [type2_object(c) if c.startswith(TYPE2_PREFIX) else c for c in task_cues]
            task.result.question_type = 2 if any(c.startswith(TYPE2_PREFIX) for c in task_cues) else 1
        if self.settings.global_local:
            kept = self._early_exit(tasks, cues, self.traces)
            cues = [task_cues if keep else [] for task_cues, keep in zip(cues, kept)]
        runs = []
        for i, (task, task_cues) in enumerate(zip(tasks, cues)):
            single = len(task_cues) == 1 and not task_cues[0].startswith(TYPE2_PREFIX)
            for cue in task_cues:
                root, tree_depth = build_tree(*task.image.size, self.view_size)  # fresh scores per cue
                if cue.startswith(TYPE2_PREFIX):
                    search = type2_search(root, type2_object(cue))
                    self.traces[i].type2_scored += len(type2_nodes(root))
                else:
                    trace = Type1Trace()
                    self.traces[i].type1.append(trace)
                    question = task.question if single else DECOMPOSED_QUESTION_TEMPLATE.format(cue)
                    skip_root = not self.settings.global_local and not single
                    search = type1_search(root, tree_depth, cue, question, self.settings, skip_root, not single, trace)
                runs.append(_Run(task, search))
        self._drive(runs)
        for task in tasks:
            mine = [run for run in runs if run.task is task]
            nodes = [n for run in mine for n in _as_nodes(run.outcome)]
            self._finish(task, nodes, [_as_nodes(run.outcome) for run in mine])

    # --- cues and early exit -------------------------------------------------------------------

    def _cues(self, tasks: Sequence[SearchTask]) -> list[list[str]]:
        """Per task: the given targets, or the cues the model names (one batched generation)."""
        asking = [task for task in tasks if getattr(task, "given_targets", None) is None]
        replies: dict[int, str] = {}
        if asking:
            start = time.perf_counter()
            batch = self.adapter.collate([self.adapter.encode_text(cue_prompt(task.question)) for task in asking])
            replies = dict(zip(map(id, asking), self.adapter.generate(batch, self.cue_max_new_tokens)))
            charge_batch("targets", asking, start, batch)
        cues = []
        for task in tasks:
            given = getattr(task, "given_targets", None)
            task_cues = list(given) if given is not None else parse_cues(replies[id(task)])
            task.result.target_source = ("given" if given is not None else "model") if task_cues else "none"
            cues.append(task_cues)
        return cues

    def _early_exit(
        self, tasks: Sequence[SearchTask], cues: list[list[str]], traces: list[QuestionTrace]
    ) -> list[bool]:
        """ZoomEye's filter_visual_cues: for a question with >= 2 cues, the answering confidence
        of "What is the appearance of the {cue}?" on the whole image (downsized to one view) per
        plain cue; if any reaches ``tau_up``, the question is answered on the whole image.
        Returns per task whether to search."""
        work = [
            (task, cue)
            for task, task_cues in zip(tasks, cues)
            if len(task_cues) > 1
            for cue in task_cues
            if not cue.startswith(TYPE2_PREFIX)
        ]
        if not work:
            return [True] * len(tasks)
        for task, trace in zip(tasks, traces):
            trace.early_exit = sum(1 for owner, _ in work if owner is task)
        texts = [ANSWERING_TEMPLATE.format(DECOMPOSED_QUESTION_TEMPLATE.format(cue)) for _, cue in work]
        views = [FinalView([_downsized(task.image, self.view_size)], "image", []) for task, _ in work]
        confidence = self._confidences([task for task, _ in work], views, texts)
        exits = {id(task) for (task, _), c in zip(work, confidence) if c >= self.settings.answer_upper}
        return [id(task) not in exits for task in tasks]

    # --- model calls -------------------------------------------------------------------------------

    def _drive(self, runs: list[_Run]) -> None:
        """Advance every search to its first request, then answer each round's requests of all
        searches in one batched call until every search has returned."""
        for run in runs:
            self._advance(run, None)
        while True:
            active = [run for run in runs if not run.done]
            if not active:
                return
            owners, views, texts = [], [], []
            for run in active:
                for node, kind, text in run.request:
                    owners.append(run.task)
                    views.append(self._node_view(run.task.image, node))
                    texts.append(self._prompt(kind, text, len(views[-1].images)))
            confidence = self._confidences(owners, views, texts)
            at = 0
            for run in active:
                n = len(run.request)
                self._advance(run, confidence[at : at + n])
                at += n

    @staticmethod
    def _advance(run: _Run, reply: list[float] | None) -> None:
        try:
            run.request = run.search.send(reply)
        except StopIteration as stop:
            run.outcome, run.done, run.request = stop.value, True, None

    def _confidences(self, owners: list, views: list[FinalView], texts: list[str]) -> list[float]:
        """Yes/No confidence of each prompt (one batched call, one "search" pass per prompt)."""
        start = time.perf_counter()
        batch = self.adapter.collate([self.adapter.encode_answer(view, text, None) for view, text in zip(views, texts)])
        confidence = self.scorer(self.adapter.last_logits(batch)).tolist()
        charge_batch("search", owners, start, batch)
        return [float(c) for c in confidence]

    def _prompt(self, kind: str, text: str, num_views: int) -> str:
        if kind == "answering":
            return ANSWERING_TEMPLATE.format(text)
        if num_views == 2:
            return (ZOOM_EXISTENCE_TEMPLATE if kind == "existence" else ZOOM_LATENT_TEMPLATE).format(text)
        if kind == "existence":
            return EXISTENCE_TEMPLATE.format(target=text)
        return (LATENT_TEMPLATE if self.settings.global_local else LOCAL_LATENT_TEMPLATE).format(text)

    # --- views ---------------------------------------------------------------------------------------

    def _node_view(self, image: Image.Image, node: Node) -> FinalView:
        """How a node is shown: the whole image at the root; otherwise its patch box's crop
        (local models) or the image with the box outlined plus the crop (global-local)."""
        if node.depth == 0:
            return FinalView([image], "image", [])
        return self._boxes_view(image, [patch_box(node, *image.size, self.view_size, self.settings.patch_scale)])

    def _boxes_view(self, image: Image.Image, boxes: list[Box]) -> FinalView:
        union = union_box(boxes)
        if not self.settings.global_local:
            return FinalView([crop(image, union)], "crop", [union])
        line = max(1, image.width // 120)  # ZoomEye: square side // 120
        return FinalView([draw_boxes(image, boxes, OUTLINE, line), crop(image, union)], "zoomeye", boxes)

    def _finish(self, task: SearchTask, nodes: list[Node], per_cue: list[list[Node]]) -> None:
        """The chosen nodes as the question's ROIs (per cue, with their confidences) and the
        view the answer is built from (the whole image when none, or the root, was chosen)."""
        width, height = task.image.size
        task.result.rois = [
            [
                Roi(
                    node.xyxy,
                    relevance=float(node.priority if node.priority is not None else 0.0),
                    confidence=None if node.answering is None else float(node.answering),
                )
                for node in cue_nodes
            ]
            for cue_nodes in per_cue
        ]
        if not nodes or any(n.depth == 0 for n in nodes):
            task.view = FinalView([task.image], "image", [])
            return
        boxes = merge_overlapping(
            [patch_box(n, width, height, self.view_size, self.settings.patch_scale) for n in nodes], MERGE_BUFFER
        )
        task.view = self._boxes_view(task.image, boxes)


def _as_nodes(outcome: Any) -> list[Node]:
    if outcome is None:
        return []
    return list(outcome) if isinstance(outcome, list) else [outcome]


def _downsized(image: Image.Image, side: int) -> Image.Image:
    """``image`` with its long side resized to ``side`` (aspect kept): the single global view
    ZoomEye's early exit asks about."""
    scale = side / max(image.size)
    if scale >= 1:
        return image
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))


__all__ = ["ZOOMEYE_SETTINGS", "ZoomEye", "ZoomEyeSettings", "build_tree", "priority_weight"]
