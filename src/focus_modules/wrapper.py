"""``FocusWrapper``: FOCUS end to end on a stock HF MLLM (steps I-VI of Fig. 2), batched.

Per group of questions, each phase is one batched model call (left padding + attention mask):

- ``"targets"`` (I): the model names the target objects of every question by in-context
  learning (greedy generation on :func:`focus_modules.targets.target_prompt`).
- ``"relevance"`` (II-IV): the existence prompt of every (image, target) over the whole
  image, reading value vectors with :class:`ValueCapture`; relevance maps
  (:class:`RelevanceMap`) and ROI proposals (:class:`RoiProposer`). A question with several
  targets encodes its image once: one prefix pass over the shared tokens, then one short pass
  per target on a copy of its KV cache (:mod:`focus_modules.prefix_reuse`); at most three
  batched calls per group (single-target questions, prefixes, suffixes). With
  ``config.window_size`` the prompts run on overlapping crops of the image instead, whose maps
  are stitched into one finer map per target (:mod:`focus_modules.ops.stitch_maps`).
- ``"verify"`` (V): existence confidence (Eq. 5) of ROI crops: the top ``n_steps`` ROIs of
  every type-1 target, every ROI of type-2 targets; then the overrun rounds (C.1).
- ``"answer"`` (VI): greedy generation on the final view built by the adapter (A.5), or
  logits matching (C.5): one prompt per option, the option's text scored as the reply.

Forward passes are counted per question and phase as the number of prompts of that question
the model processed (A.2 counts one FP per call of the model on one prompt), so the counts do
not depend on how questions are batched. Questions given the same ``search_keys`` entry (the
same image and question with rotated options, as HR-Bench's) share one search (steps I-V):
the passes are counted where they were spent, on the first of them.
With prefix reuse the prefix pass and each target's
suffix pass count as one each (``1 + T`` for ``T >= 2`` targets instead of ``T``), while the
tokens the model processed (``FocusResult.tokens``) drop to one image plus ``T`` suffixes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from focus_modules import targets as target_text
from focus_modules.adapters import ModelAdapter, Selection, adapter_for
from focus_modules.adapters.base import OPTION_LETTERS, Encoding, FinalView
from focus_modules.adapters.views import clip_box, crop, load_rgb
from focus_modules.baselines import SEARCH_METHODS, SearchMethod, search_method
from focus_modules.config import ANSWER_SCHEMES, METHODS, FocusConfig
from focus_modules.modules.existence import ExistenceScorer
from focus_modules.modules.relevance_map import RelevanceMap
from focus_modules.modules.roi_proposer import RoiProposer
from focus_modules.modules.value_capture import ValueCapture
from focus_modules.ops.boxes import CellGeometry, image_cell_mask
from focus_modules.ops.stitch_maps import stitch_maps, stitched_grid, window_boxes
from focus_modules.prefix_reuse import capture_existence_values
from focus_modules.results import FocusResult, Roi, charge, charge_batch


@dataclass
class _Job:
    """One question while it moves through the phases."""

    source: object  # the image as given; decoded to RGB while its group runs
    question: str
    options: list[str] | None
    given_targets: list[str] | None
    result: FocusResult
    index: int = 0  # position in the answer call
    answer_prompt: str | None = None  # replaces the adapter's question + options text in step VI
    search_key: object = None
    verified: list[int] = field(default_factory=list)  # per target: ROIs verified so far
    image: Image.Image | None = None
    padded_from: tuple[int, int] | None = None  # (w, h) of the image before aspect-ratio padding
    view: FinalView | None = None  # set by a search baseline: the view step VI answers on


class FocusWrapper:
    """FOCUS around a HF multimodal model.

    Args:
        model: e.g. ``LlavaForConditionalGeneration`` (any class with a registered adapter).
        processor: the model's processor.
        config: hyper-parameters; ``None`` takes :meth:`ModelAdapter.default_config`: the
            family's Table 7 preset fitted to the model's depth, with the settings of the model
            folder's ``focus_config.json`` when it was loaded from one.
        adapter: a :class:`ModelAdapter` instance to use instead of the registry's choice.
        max_new_tokens: generation budget of the final answer.
        target_max_new_tokens: generation budget of step I.
        reuse_prefix: encode each image once per question in the relevance pass (one prefix
            pass, then a short pass per target on a copy of the KV cache); the maps equal one
            full pass per target up to floating-point rounding. ``False``: one full pass each.
        compile: ``torch.compile`` the language model in place (``True``, or a dict of
            ``torch.compile`` keyword arguments, e.g. ``{"backend": "eager"}``; ``dynamic=True``
            unless given). The value-capture hooks are attached before compiling and stay (see
            :class:`ValueCapture`), and every batch is left-padded to a multiple of ``bucket``
            tokens so that new questions rarely bring new shapes (recompiles). Results equal
            eager up to floating-point rounding.
        bucket: the sequence-length bucket (tokens) used with ``compile``.

    Illustration (needs a loaded model; not run as a doctest)::

        fw = FocusWrapper(model, processor, FocusConfig.preset("llava-1.5", dataset="vstar"))
        [r] = fw.answer([image], ["What is the color of the cup?"], options=[["red", "blue"]])
        r.answer, r.targets, r.rois[0][0].box, r.forward_passes
    """

    def __init__(
        self,
        model,
        processor,
        config: FocusConfig | None = None,
        adapter: ModelAdapter | None = None,
        max_new_tokens: int = 64,
        target_max_new_tokens: int = 32,
        reuse_prefix: bool = True,
        compile: bool | dict = False,
        bucket: int = 64,
    ) -> None:
        self.model = model
        self.adapter = adapter if adapter is not None else adapter_for(model, processor)
        self.config = config if config is not None else self.adapter.default_config()
        self.config.check_layers(self.adapter.num_layers())
        self.max_new_tokens = max_new_tokens
        self.target_max_new_tokens = target_max_new_tokens
        self.reuse_prefix = reuse_prefix
        self.capture = ValueCapture(model, self.config.layers, decoder_layers=self.adapter.decoder_layers())
        if compile:
            self._compile({"dynamic": True, **({} if compile is True else compile)}, bucket)
        self.scorer = ExistenceScorer(*self.adapter.yes_no_ids())
        self.relevance = RelevanceMap()
        self.proposer = RoiProposer.from_config(self.config)
        self._search_methods: dict[str, SearchMethod] = {}

    def _compile(self, options: dict, bucket: int) -> None:
        """Compile the language model (the module that runs the decoder layers) in place
        (``nn.Module.compile``), with the capture hooks attached first and kept."""
        if not isinstance(bucket, int) or bucket < 1:
            raise ValueError(f"bucket must be a positive int, got {bucket!r}")
        layers = self.adapter.decoder_layers()
        language_model = next(m for m in self.model.modules() if getattr(m, "layers", None) is layers)
        self.capture.attach()
        language_model.compile(**options)
        self.adapter.pad_to_multiple_of = bucket

    # --- public API -------------------------------------------------------------------------------

    def answer(
        self,
        images: Sequence,
        questions: Sequence[str],
        options: Sequence[Sequence[str] | None] | None = None,
        targets: Sequence[Sequence[str] | None] | None = None,
        method: str = "focus",
        batch_size: int | None = None,
        progress: bool = False,
        answer_prompts: Sequence[str | None] | None = None,
        answer_scheme: str = "generate",
        search_keys: Sequence[object] | None = None,
    ) -> list[FocusResult]:
        """Answer each question about its image.

        Args:
            images: one image per question (PIL image of any mode, path, or uint8 array);
                converted to RGB when its group runs.
            questions: non-empty question strings.
            options: ``None``, or per question ``None`` (open-ended) or a list of option texts
                shown as ``(A) ...`` lines with the letter instruction.
            targets: ``None``, or per question ``None`` (step I asks the model) or the target
                objects to search for (skips step I; ``"all ..."`` marks type 2).
            method: ``"focus"`` or ``"vanilla"`` (the whole image, no search).
            batch_size: questions per group (each phase of a group is one batched call);
                ``None`` puts all questions in one group. Results do not depend on it.
            progress: show a tqdm progress bar over groups.
            answer_prompts: ``None``, or per question ``None`` or the text of the final question
                (step VI), replacing the question + option lines the adapter would write (e.g.
                an evaluation harness's own prompt); steps I-V still read ``questions``.
            answer_scheme: ``"generate"`` (the answer is generated, A.2) or ``"logits"`` (C.5:
                one prompt per option, the question alone then the option's text as the reply;
                the option with the highest mean log-probability wins and its letter is the
                answer; needs options; one answer pass per option).
            search_keys: ``None``, or one hashable per question: questions with equal keys (the
                same image and question, e.g. HR-Bench's option rotations) share one search
                (steps I-V) and are kept in one group.

        Returns:
            One :class:`FocusResult` per question, in order.
        """
        jobs = self._jobs(images, questions, options, targets, method)
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        self._check_final(jobs, answer_prompts, answer_scheme)
        groups = self._groups(jobs, search_keys, batch_size or max(len(jobs), 1))
        if progress:
            from tqdm.auto import tqdm

            groups = tqdm(groups, desc=f"FOCUS ({method})", unit="group")
        with torch.inference_mode():
            for group in groups:
                for job in group:  # decoded per group, so memory follows batch_size
                    image = load_rgb(job.source)
                    job.image, note = self.adapter.fit_aspect_ratio(image)
                    if note:
                        job.result.notes.append(note)
                        job.padded_from = image.size
                if method == "focus":
                    leaders, followers = self._search_leaders(group)
                    self._find_targets(leaders)
                    searching = [job for job in leaders if job.result.targets]
                    if searching:
                        self._relevance(searching)
                        self._verify(searching)
                    for job, leader in followers:
                        self._reuse_search(job, leader)
                elif method in SEARCH_METHODS:
                    searcher = self._search_method(method)
                    for job in group:  # every phase of the method is in the records, at 0 when nothing ran
                        for phase in searcher.phases:
                            job.result.forward_passes.setdefault(phase, 0)
                            job.result.tokens.setdefault(phase, 0)
                            job.result.timings.setdefault(phase, 0.0)
                    searcher.search(group)
                self._final_answer(group, answer_scheme)
                for job in group:
                    if job.padded_from is not None:
                        _clip_to_image(job.result, *job.padded_from)
                    job.image = None
        return [job.result for job in jobs]

    def _search_method(self, name: str) -> SearchMethod:
        """The baseline ``name`` on this wrapper's adapter (built on first use)."""
        if name not in self._search_methods:
            self._search_methods[name] = search_method(name)(self.adapter)
        return self._search_methods[name]

    # --- input checks -----------------------------------------------------------------------------

    def _jobs(self, images, questions, options, targets, method) -> list[_Job]:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if isinstance(questions, str) or not isinstance(questions, Sequence):
            raise ValueError("questions must be a list of strings (one per image)")
        if isinstance(images, (str, Image.Image)) or not isinstance(images, Sequence):
            raise ValueError("images must be a list (one image per question)")
        n = len(questions)
        if len(images) != n:
            raise ValueError(f"got {len(images)} images for {n} questions")
        for name, per_question in (("options", options), ("targets", targets)):
            if per_question is not None and (isinstance(per_question, str) or len(per_question) != n):
                raise ValueError(f"{name} must be None or a list with one entry per question ({n})")
        jobs = []
        for i in range(n):
            question = questions[i]
            if not isinstance(question, str) or not question.strip():
                raise ValueError(f"questions[{i}] must be a non-empty string, got {question!r}")
            opts = self._check_strings(options[i] if options is not None else None, f"options[{i}]", allow_empty=False)
            if opts is not None and len(opts) > len(OPTION_LETTERS):
                raise ValueError(f"options[{i}] has {len(opts)} options; at most {len(OPTION_LETTERS)} are supported")
            given = self._check_strings(targets[i] if targets is not None else None, f"targets[{i}]", allow_empty=True)
            result = FocusResult(answer="", targets=[], question_type=1, method=method)
            jobs.append(_Job(images[i], question.strip(), opts, given, result, index=i))
        return jobs

    @staticmethod
    def _check_final(jobs: list[_Job], answer_prompts, answer_scheme: str) -> None:
        if answer_scheme not in ANSWER_SCHEMES:
            raise ValueError(f"answer_scheme must be one of {ANSWER_SCHEMES}, got {answer_scheme!r}")
        if answer_scheme == "logits":
            missing = [job.index for job in jobs if not job.options]
            if missing:
                raise ValueError(f"answer_scheme='logits' scores options; questions {missing[:5]} have none")
        if answer_prompts is None:
            return
        if isinstance(answer_prompts, str) or len(answer_prompts) != len(jobs):
            raise ValueError(f"answer_prompts must be None or a list with one entry per question ({len(jobs)})")
        for job, text in zip(jobs, answer_prompts):
            if text is not None and (not isinstance(text, str) or not text.strip()):
                raise ValueError(f"answer_prompts[{job.index}] must be None or a non-empty string, got {text!r}")
            job.answer_prompt = text

    @staticmethod
    def _groups(jobs: list[_Job], search_keys, step: int) -> list[list[_Job]]:
        """Consecutive groups of about ``step`` questions; questions sharing a search key go
        into the group of the first of them (a group may then hold more than ``step``)."""
        if search_keys is None:
            return [jobs[i : i + step] for i in range(0, len(jobs), step)]
        if isinstance(search_keys, str) or len(search_keys) != len(jobs):
            raise ValueError(f"search_keys must be None or a list with one entry per question ({len(jobs)})")
        units: dict[object, list[_Job]] = {}
        for job, key in zip(jobs, search_keys):
            job.search_key = key
            unit = units.setdefault(("key", key) if key is not None else ("job", job.index), [])
            if unit and (unit[0].question, unit[0].given_targets) != (job.question, job.given_targets):
                raise ValueError(
                    f"questions {unit[0].index} and {job.index} share search key {key!r} but not "
                    "their question and targets; a search can only be shared by the same question"
                )
            unit.append(job)
        groups: list[list[_Job]] = []
        for unit in units.values():
            if not groups or len(groups[-1]) + len(unit) > step and groups[-1]:
                groups.append([])
            groups[-1].extend(unit)
        return groups

    @staticmethod
    def _search_leaders(group: list[_Job]) -> tuple[list[_Job], list[tuple[_Job, _Job]]]:
        """The questions of a group that run the search, and (follower, leader) pairs of those
        that reuse the search of an earlier question with the same key."""
        leaders, followers, first = [], [], {}
        for job in group:
            leader = first.setdefault(job.search_key, job) if job.search_key is not None else job
            if leader is job:
                leaders.append(job)
            else:
                followers.append((job, leader))
        return leaders, followers

    @staticmethod
    def _reuse_search(job: _Job, leader: _Job) -> None:
        """Steps I-V of ``leader`` as ``job``'s own (copies of its ROIs); no passes spent."""
        mine, theirs = job.result, leader.result
        mine.targets, mine.question_type, mine.target_source = (
            list(theirs.targets),
            theirs.question_type,
            theirs.target_source,
        )
        mine.rois = [[Roi(roi.box, roi.relevance, roi.confidence) for roi in rois] for rois in theirs.rois]
        mine.relevance_maps, mine.map_extents = list(theirs.relevance_maps), list(theirs.map_extents)
        mine.search_reused_from = leader.index

    @staticmethod
    def _check_strings(items, name: str, allow_empty: bool) -> list[str] | None:
        if items is None:
            return None
        if isinstance(items, str) or not isinstance(items, Sequence):
            raise ValueError(f"{name} must be a list of strings or None, got {type(items).__name__} {items!r}")
        if not items and not allow_empty:
            raise ValueError(f"{name} is an empty list; pass None for an open-ended question")
        for j, item in enumerate(items):
            if not isinstance(item, str) or not item.strip():
                raise ValueError(f"{name}[{j}] must be a non-empty string, got {item!r}")
        return [item.strip() for item in items]

    # --- step I: targets and question type ------------------------------------------------------

    def _find_targets(self, group: list[_Job]) -> None:
        asking = [job for job in group if job.given_targets is None]
        replies = []
        if asking:
            start = time.perf_counter()
            prompts = [self.adapter.encode_text(self.adapter.target_prompt(job.question)) for job in asking]
            batch = self.adapter.collate(prompts)
            replies = self.adapter.generate(batch, self.target_max_new_tokens)
            charge_batch("targets", asking, start, batch)
        reply_of = dict(zip(map(id, asking), replies))
        for job in group:
            if job.given_targets is not None:
                raw, source = job.given_targets, "given"
            else:
                raw, source = target_text.parse_targets(reply_of[id(job)], job.question), "model"
                if not raw:
                    raw, source = target_text.keyword_targets(job.question), "keywords"
            cleaned, _ = target_text.normalize_targets(raw)
            job.result.targets = cleaned
            job.result.question_type = target_text.question_type(job.question, raw)
            job.result.target_source = source if cleaned else "none"

    # --- steps II-IV: relevance maps and proposals -----------------------------------------------

    def _relevance(self, jobs: list[_Job]) -> None:
        if self.config.window_size is not None:
            self._windowed_relevance(jobs)
            return
        start = time.perf_counter()
        pairs = [(job, t) for job in jobs for t in range(len(job.result.targets))]
        encodings = [
            enc for job in jobs for enc in self.adapter.encode_existence_targets(job.image, job.result.targets)
        ]
        with self.capture as capture:
            captured = capture_existence_values(
                self.adapter, capture, encodings, [id(job) for job, _ in pairs], reuse_prefix=self.reuse_prefix
            )
        values = captured.values
        target_idx, visual_idx, grid_hw, valid = self._map_indices(encodings, captured.offsets, values.device)
        maps = self.relevance(values, target_idx, visual_idx, grid_hw, captured.attention_mask)
        self._propose(pairs, maps, grid_hw, valid, [enc.geometry for enc in encodings])
        searched = list({id(job): job for job, _ in pairs}.values())  # capture's question order
        charge("relevance", list(zip(searched, captured.passes, captured.tokens)), start)

    def _propose(self, pairs, maps: torch.Tensor, grid_hw: torch.Tensor, valid: torch.Tensor, geometries) -> None:
        """ROI proposals on the maps of (question, target) ``pairs``; stores each pair's map,
        its extent and its ROIs (pixels, through the map's ``CellGeometry``) in the result."""
        rois = self.proposer(maps, grid_hw, valid_mask=valid)
        for p, ((job, _), geometry) in enumerate(zip(pairs, geometries)):
            h, w = grid_hw[p].tolist()
            job.result.relevance_maps.append(maps[p, :h, :w].float().cpu())
            origin, cell = geometry.origin, geometry.cell_size
            far = origin + cell * torch.tensor([w, h], dtype=cell.dtype)
            job.result.map_extents.append((*origin.tolist(), *far.tolist()))
            keep = rois.valid[p]
            pixels = self.adapter.cells_to_pixels(rois.boxes[p][keep].cpu(), geometry, self.config.downsample)
            scores = rois.scores[p][keep].tolist()
            job.result.rois.append([Roi(tuple(box), float(s)) for box, s in zip(pixels.tolist(), scores)])
            job.verified.append(0)

    def _windowed_relevance(self, jobs: list[_Job]) -> None:
        """Steps II-IV over sliding windows (``config.window_size``): the existence prompt of
        every target on every window of its image (a crop, encoded as any crop is), all in one
        capture with the group's other prompts (the targets of one window share its prefix
        pass); each window's map as usual; the maps of one (question, target) stitched into one
        map of the whole image (:func:`~focus_modules.ops.stitch_maps.stitch_maps`), which the
        unchanged proposals, verification and answer use. Passes: one per window prompt, as
        :func:`capture_existence_values` counts them (``1`` or ``1 + T`` per window)."""
        start = time.perf_counter()
        cfg = self.config
        pairs = [(job, t) for job in jobs for t in range(len(job.result.targets))]
        pair_of = {(id(job), t): p for p, (job, t) in enumerate(pairs)}
        encodings, owners, window_owner, shifts = [], [], [], []
        for job in jobs:
            boxes = window_boxes(job.image.size, cfg.window_size, cfg.window_overlap).tolist()
            for w, box in enumerate(boxes):
                view = crop(job.image, box)
                for t, enc in enumerate(self.adapter.encode_existence_targets(view, job.result.targets)):
                    encodings.append(enc)
                    owners.append((id(job), w))  # prefix reuse: the targets of one window
                    window_owner.append(pair_of[(id(job), t)])
                    shifts.append((box[0], box[1], *job.image.size))
        with self.capture as capture:
            captured = capture_existence_values(
                self.adapter, capture, encodings, owners, reuse_prefix=self.reuse_prefix
            )
        values = captured.values
        target_idx, visual_idx, grid_hw, valid = self._map_indices(encodings, captured.offsets, values.device)
        maps = self.relevance(values, target_idx, visual_idx, grid_hw, captured.attention_mask)
        shift = torch.tensor(shifts, dtype=torch.float64)
        windows = CellGeometry(
            torch.stack([enc.geometry.origin for enc in encodings]) + shift[:, :2],
            torch.stack([enc.geometry.cell_size for enc in encodings]),
            shift[:, 2:],
        )
        owner = torch.tensor(window_owner, dtype=torch.long)
        grid, out_hw = stitched_grid(windows, owner, len(pairs))
        stitched = stitch_maps(
            maps, grid_hw, windows, owner.to(maps.device), grid, out_hw, valid, combine=cfg.window_combine
        )
        h_max, w_max = stitched.maps.shape[1:]
        inside = image_cell_mask(grid, out_hw, h_max, w_max).to(stitched.maps.device)
        out_hw = out_hw.to(stitched.maps.device)
        geometries = [CellGeometry(*(field[p] for field in grid)) for p in range(len(pairs))]
        self._propose(pairs, stitched.maps, out_hw, inside & (stitched.coverage > 0), geometries)
        job_of = {id(job): job for job in jobs}
        windows_in_order = list(dict.fromkeys(owners))  # capture's order of (question, window)
        spent = zip(windows_in_order, captured.passes, captured.tokens)
        charge("relevance", [(job_of[key[0]], n, tokens) for key, n, tokens in spent], start)

    @staticmethod
    def _map_indices(encodings: list[Encoding], offsets: list[int], device):
        """Pad per-prompt positions into the ``relevance_map`` index tensors, shifted by the
        left padding of each prompt."""
        num = len(encodings)
        max_s = max(e.target_positions.numel() for e in encodings)
        max_v = max(e.visual_positions.numel() for e in encodings)
        h_max = max(e.grid_hw[0] for e in encodings)
        w_max = max(e.grid_hw[1] for e in encodings)
        target_idx = torch.full((num, max_s), -1, dtype=torch.long)
        visual_idx = torch.full((num, max_v), -1, dtype=torch.long)
        valid = torch.zeros((num, h_max, w_max), dtype=torch.bool)
        for p, (enc, offset) in enumerate(zip(encodings, offsets)):
            target_idx[p, : enc.target_positions.numel()] = enc.target_positions + offset
            visual_idx[p, : enc.visual_positions.numel()] = enc.visual_positions + offset
            valid[p, : enc.grid_hw[0], : enc.grid_hw[1]] = enc.valid_cells
        grid_hw = torch.tensor([e.grid_hw for e in encodings], dtype=torch.long)
        return target_idx.to(device), visual_idx.to(device), grid_hw.to(device), valid.to(device)

    # --- step V: verification -------------------------------------------------------------------

    def _verify(self, jobs: list[_Job]) -> None:
        n_steps = self.config.n_steps
        first_round = []
        for job in jobs:
            for t, rois in enumerate(job.result.rois):
                budget = len(rois) if job.result.question_type == 2 else min(n_steps, len(rois))
                first_round += [(job, t, r) for r in range(budget)]
        self._score(first_round)
        if self.config.overrun and n_steps >= 1:
            # C.1: a type-1 target whose verified ROIs all answered "No" verifies one more ROI
            # per round until one answers "Yes" or none is left.
            while True:
                pending = [
                    (job, t, job.verified[t])
                    for job in jobs
                    if job.result.question_type == 1
                    for t, rois in enumerate(job.result.rois)
                    if 0 < job.verified[t] < len(rois) and all(r.confidence < 0 for r in rois[: job.verified[t]])
                ]
                if not pending:
                    break
                self._score(pending)
        for job in jobs:
            job.result.rois = [self._rank(rois) for rois in job.result.rois]

    def _score(self, work: list[tuple[_Job, int, int]]) -> None:
        """Existence confidence of ROI ``r`` of target ``t`` of each job, in one batched call."""
        if not work:
            return
        start = time.perf_counter()
        encodings = [
            self.adapter.encode_existence(crop(job.image, job.result.rois[t][r].box), job.result.targets[t])
            for job, t, r in work
        ]
        batch = self.adapter.collate(encodings)
        confidence = self.scorer(self.adapter.last_logits(batch)).tolist()
        for (job, t, r), c in zip(work, confidence):
            job.result.rois[t][r].confidence = float(c)
            job.verified[t] = max(job.verified[t], r + 1)
        charge_batch("verify", [job for job, _, _ in work], start, batch)

    @staticmethod
    def _rank(rois: list[Roi]) -> list[Roi]:
        """Verified ROIs by confidence (ties keep relevance order), then the unverified ones."""
        verified = sorted((r for r in rois if r.confidence is not None), key=lambda r: -r.confidence)
        return verified + [r for r in rois if r.confidence is None]

    # --- step VI: final answer ------------------------------------------------------------------

    def selection(self, result: FocusResult) -> Selection:
        """The ROIs shown for the final answer (Sec. 3.3): type 1, each target's best ROI;
        type 2, every verified ROI with confidence above ``t_type2``."""
        if result.question_type == 2:
            boxes = [
                [r.box for r in rois if r.confidence is not None and r.confidence > self.config.t_type2]
                for rois in result.rois
            ]
        else:
            boxes = [[rois[0].box] if rois else [] for rois in result.rois]
        return Selection(result.question_type, boxes)

    def _final_answer(self, group: list[_Job], answer_scheme: str) -> None:
        start = time.perf_counter()
        views = []
        for job in group:
            result = job.result
            if job.view is not None:
                view = job.view
            elif result.method == "vanilla" or not result.targets:
                if result.method == "vanilla":
                    result.question_type = target_text.question_type(job.question, [])
                view = FinalView([job.image], "image", [])
            else:
                view = self.adapter.final_view(job.image, self.selection(result), self.config)
            result.final_view, result.final_boxes = view.kind, list(view.boxes)
            views.append(view)
        if answer_scheme == "logits":
            self._match_logits(group, views, start)
            return
        encodings = [
            self.adapter.encode_answer(view, job.answer_prompt, None)
            if job.answer_prompt is not None
            else self.adapter.encode_answer(view, job.question, job.options)
            for job, view in zip(group, views)
        ]
        batch = self.adapter.collate(encodings)
        answers = self.adapter.generate(batch, self.max_new_tokens)
        charge_batch("answer", group, start, batch)
        for job, text in zip(group, answers):
            job.result.answer = text

    def _match_logits(self, group: list[_Job], views: list[FinalView], start: float) -> None:
        """Logits matching (C.5), one prompt per option of every question, in one call."""
        encodings, lengths, owners = [], [], []
        for job, view in zip(group, views):
            for option in job.options:
                encoding, length = self.adapter.encode_statement(view, job.question, option)
                encodings.append(encoding)
                lengths.append(length)
                owners.append(job)
        batch = self.adapter.collate(encodings)
        scores = self.adapter.statement_log_likelihoods(batch, lengths).tolist()
        charge_batch("answer", owners, start, batch)
        for job in group:
            mine = [score for owner, score in zip(owners, scores) if owner is job]
            job.result.option_scores = mine
            job.result.answer = OPTION_LETTERS[max(range(len(mine)), key=mine.__getitem__)]


def _clip_to_image(result: FocusResult, width: int, height: int) -> None:
    """Clip the result's boxes to the original image (ROIs may reach into the padding added by
    :meth:`ModelAdapter.fit_aspect_ratio`)."""
    for rois in result.rois:
        for roi in rois:
            roi.box = clip_box(roi.box, width, height)
    result.final_boxes = [clip_box(box, width, height) for box in result.final_boxes]
