"""llama.cpp inference shared by eval, predict and the throughput benchmark.

Greedy decoding only: the answers must be exactly what `create_chat_completion(temperature=0)` gives
(tests/infer/test_engine.py checks it), only faster. The speed comes from three things that change no output:
the system prompt's KV cache is computed once and shared by every article, several articles decode
together in one multi-sequence `llama_batch` (one weight pass serves all of them), and `eval.workers`
processes split the articles.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from jinmei.template import chat
from jinmei.errors import JinmeiError

REUSE_ALIGN = 4   # cached-prefix lengths are multiples of this (see Engine._align_cache)


@dataclass
class Completion:
    text: str                     # the raw answer, end-of-turn token excluded
    prompt_tokens: int
    generated_tokens: int
    truncated: bool               # hit max_new_tokens before the end-of-turn token: a failure, never an answer
    seconds: float = 0.0          # wall time from the article's first decode to its last (overlaps in a batch)
    tokens: list[int] = field(default_factory=list, repr=False)


def gguf_path(quantize, gguf_dir: Path | str = "models/gguf") -> Path:
    """The quantized model the quantize stage wrote: <dir>/<quantize.name>-<quantize.type>.gguf."""
    path = Path(gguf_dir) / f"{quantize.name}-{quantize.type.strip().upper()}.gguf"
    if not path.exists():
        raise JinmeiError(f"{path}: not found; run `dvc repro quantize` (or pass --gguf)")
    return path


def answer_schema(fields: Sequence[str]) -> dict[str, Any]:
    """JSON schema of an answer: the key field a non-empty string, the others string or null, in order."""
    props = {f: ({"type": "string", "minLength": 1} if i == 0 else {"type": ["string", "null"]})
             for i, f in enumerate(fields)}
    person = {"type": "object", "properties": props, "required": list(fields), "additionalProperties": False}
    return {"type": "object", "properties": {"persons": {"type": "array", "items": person}},
            "required": ["persons"], "additionalProperties": False}


def answer_grammar_text(fields: Sequence[str]) -> str:
    """GBNF for the answer schema with no free whitespace (free whitespace lets the model pad forever)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(answer_schema(fields)))
    lines = [("space ::= \"\"" if line.startswith("space ::=") else line) for line in gbnf.splitlines()]
    return "\n".join(lines) + "\n"


def answer_grammar(fields: Sequence[str]):
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(answer_grammar_text(fields), verbose=False)


def load_llama(gguf: Path | str, *, n_ctx: int, n_threads: int):
    import llama_cpp

    if not Path(gguf).exists():
        raise JinmeiError(f"{gguf}: GGUF file not found")
    return llama_cpp.Llama(
        model_path=str(gguf), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
        n_gpu_layers=-1 if llama_cpp.llama_supports_gpu_offload() else 0, verbose=False, seed=0,
    )


def naive_complete(llm, system: str, article: str, max_new_tokens: int, grammar=None) -> Completion:
    """The reference: one chat completion per article from a fresh state (no cache reuse), llama-cpp-python
    rendering the GGUF's own template (an article without special-token strings: the same prompt ids)."""
    llm.reset()
    start = time.perf_counter()
    fmt = GgufChat.of(llm).fmt
    reply = llm.create_chat_completion(chat.messages(fmt, system, article), temperature=0.0,
                                       max_tokens=max_new_tokens, grammar=grammar)
    choice = reply["choices"][0]
    return Completion(text=choice["message"]["content"] or "", prompt_tokens=reply["usage"]["prompt_tokens"],
                      generated_tokens=reply["usage"]["completion_tokens"],
                      truncated=choice["finish_reason"] == "length", seconds=time.perf_counter() - start)


def same_answer(reference: Completion, fast: Completion, max_new_tokens: int) -> bool:
    """Identical greedy answers. create_completion goes past max_tokens while its text ends inside a UTF-8
    character, so a truncated reference may be longer: then the other answer must be its prefix."""
    if not reference.truncated:
        return not fast.truncated and fast.text == reference.text
    return fast.truncated and fast.generated_tokens == max_new_tokens and reference.text.startswith(fast.text)


class GgufChat:
    """The GGUF's own chat template and tokenizer, as llama.cpp serves them: the prompt rendered by the template
    stored in the GGUF, cut at its control tokens, the article tokenized as text (jinmei.template.chat)."""

    def __init__(self, llm):
        import llama_cpp

        self.llm, vocab = llm, llm._model.vocab
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise JinmeiError("the GGUF has no tokenizer.chat_template; rerun `dvc repro quantize`")
        self.bos_id, eos_id = llama_cpp.llama_vocab_bos(vocab), llama_cpp.llama_vocab_eos(vocab)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        attrs = {i: llama_cpp.llama_vocab_get_attr(vocab, i) for i in range(llm.n_vocab())}
        control = {i: a for i, a in attrs.items() if a & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL}
        self.specials = [self.piece(i) for i in control]
        self.lstrip = {self.piece(i) for i, a in control.items() if a & llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP}
        self.rstrip = {self.piece(i) for i, a in control.items() if a & llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP}
        self.fmt = chat.format_of(template, self.piece(self.bos_id) if self.bos_id >= 0 else None,
                                  self.piece(eos_id) if eos_id >= 0 else None)

    @classmethod
    def of(cls, llm) -> "GgufChat":
        """The model's GgufChat, built once: it reads every token's attributes, too slow to repeat per article."""
        if getattr(llm, "_jinmei_chat", None) is None:
            llm._jinmei_chat = cls(llm)
        return llm._jinmei_chat

    def piece(self, token: int) -> str:
        import llama_cpp

        return llama_cpp.llama_vocab_get_text(self.llm._model.vocab, token).decode("utf-8", errors="replace")

    def prompt_ids(self, system: str, article: str) -> list[int]:
        text = chat.prompt_text(self.fmt, system, article)
        bos = self.fmt.bos_token
        if self.add_bos and bos and text.startswith(bos):  # llama.cpp adds it; the render's copy would be a second
            text = text[len(bos):]
        ids = [self.bos_id] if self.add_bos else []
        parts = chat.pieces(text, self.specials, chat.contents(self.fmt, system, article))
        for piece, special in chat.strip_around(parts, self.lstrip, self.rstrip):
            got = self.llm.tokenize(piece.encode("utf-8"), add_bos=False, special=special)
            if special and len(got) != 1:
                raise JinmeiError(f"llama.cpp does not know {piece!r} as one control token")
            ids += got
        return ids


@dataclass
class _Slot:
    index: int
    pending: list[int]            # prompt tokens not yet decoded
    pos: int                      # position of the next token to decode
    start: float
    out: list[int] = field(default_factory=list)


class Engine:
    """Greedy decoding of many articles with one model.

    batch_size > 1 (and no grammar): continuous multi-sequence batching on a context of
    batch_size + 1 sequences; the last one holds the shared prompt prefix, copied into a slot
    when an article starts there. Otherwise: one article at a time through `Llama.generate`,
    which keeps the longest common prefix of consecutive prompts in the KV cache.
    """

    def __init__(self, gguf: Path | str, *, n_ctx: int, n_threads: int, max_new_tokens: int,
                 batch_size: int = 1, n_batch: int = 512, grammar_fields: Sequence[str] | None = None):
        import llama_cpp

        self.lib = llama_cpp
        self.llm = load_llama(gguf, n_ctx=n_ctx, n_threads=n_threads)
        self.n_ctx, self.n_threads, self.max_new_tokens = n_ctx, n_threads, max_new_tokens
        self.grammar = answer_grammar(grammar_fields) if grammar_fields else None
        self.batch_size = 1 if self.grammar is not None else max(1, batch_size)
        self.n_batch = n_batch              # tokens per llama_decode in batched mode (prompt chunks + answers)
        self.vocab = self.llm._model.vocab
        self.n_vocab = self.llm.n_vocab()
        self.chat = GgufChat.of(self.llm)
        self._ctx = None
        self._prefix: list[int] = []

    def tokenize(self, system: str, article: str) -> list[int]:
        return self.chat.prompt_ids(system, article)

    def text(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens).decode("utf-8", errors="ignore")

    def is_end(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    def complete(self, system: str, articles: Sequence[str],
                 progress: Callable[[int], None] | None = None) -> list[Completion]:
        """Answers in the order of `articles`; `progress(n)` is called as n more articles finish."""
        prompts = [self.tokenize(system, a) for a in articles]
        for i, p in enumerate(prompts):
            if len(p) + self.max_new_tokens > self.n_ctx:  # eval measures first (no article reaches this there)
                text = articles[i]
                head = repr(text[:30]) + ("..." if len(text) > 30 else "")  # escaped, one line
                raise JinmeiError(f"the article {head} ({len(text)} characters) needs {len(p)} prompt + "
                                  f"{self.max_new_tokens} answer tokens, more than eval.n_ctx={self.n_ctx}: raise "
                                  "eval.n_ctx in params.yaml, or shorten the article")
        # neighbours sharing long prefixes keep more of the KV cache between articles
        order = sorted(range(len(prompts)), key=lambda i: prompts[i])
        done: dict[int, Completion] = {}
        run = self._run_batched if self.batch_size > 1 else self._run_sequential
        for i, completion in run([prompts[i] for i in order]):
            done[order[i]] = completion
            if progress:
                progress(1)
        return [done[i] for i in range(len(prompts))]

    def _finish(self, prompt_len: int, out: list[int], truncated: bool, start: float) -> Completion:
        return Completion(text=self.text(out), prompt_tokens=prompt_len, generated_tokens=len(out),
                          truncated=truncated, seconds=time.perf_counter() - start, tokens=list(out))

    def _run_sequential(self, prompts: list[list[int]]):
        for i, prompt in enumerate(prompts):
            start = time.perf_counter()
            self._align_cache(prompt)
            out: list[int] = []
            truncated = True
            for token in self.llm.generate(prompt, temp=0.0, repeat_penalty=1.0, grammar=self.grammar):
                if self.is_end(token):
                    truncated = False
                    break
                out.append(token)
                if len(out) >= self.max_new_tokens:
                    break
            yield i, self._finish(len(prompt), out, truncated, start)

    def _align_cache(self, prompt: list[int]) -> None:
        """Keep only a multiple of REUSE_ALIGN cached tokens before `Llama.generate` reuses them.

        llama.cpp's repacked CPU kernels (Q4_K, Q4_0, IQ4_NL, ...) multiply a batch's rows in groups of 4
        and its last `len % 4` rows one by one, with different rounding. A cached prefix whose length is a
        multiple of 4 keeps every remaining prompt row in the same kind of group as in a full-prompt
        decode, so the logits, and the greedy answer, are bitwise the naive loop's.
        """
        cached = self.llm._input_ids.tolist()
        same = 0
        for a, b in zip(cached, prompt):
            if a != b:
                break
            same += 1
        keep = min(same, len(prompt) - 1) // REUSE_ALIGN * REUSE_ALIGN
        if keep < self.llm.n_tokens:
            self.llm.n_tokens = keep   # Llama.generate then reuses exactly `keep` tokens

    # -- multi-sequence batching through the low-level llama_batch API --

    def _open_context(self, per_seq_ctx: int) -> None:
        lib = self.lib
        if self._ctx is not None and self._per_seq_ctx >= per_seq_ctx:
            return
        self._close_context()
        params = lib.llama_context_default_params()
        params.n_seq_max = self.batch_size + 1
        params.n_ctx = per_seq_ctx * (self.batch_size + 1)
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_threads = params.n_threads_batch = self.n_threads
        params.kv_unified = False          # one KV stream per sequence: attention sees only its own cells
        self._ctx = lib.llama_init_from_model(self.llm._model.model, params)
        if not self._ctx:
            raise JinmeiError("llama.cpp could not create a batched context; set eval.batch_size: 1")
        self._mem = lib.llama_get_memory(self._ctx)
        self._batch = lib.llama_batch_init(params.n_batch, 0, 1)
        self._n_batch = params.n_batch
        self._per_seq_ctx = per_seq_ctx
        self._prefix = []

    def _close_context(self) -> None:
        if self._ctx is not None:
            self.lib.llama_batch_free(self._batch)
            self.lib.llama_free(self._ctx)
            self._ctx = None

    def __del__(self):
        try:
            self._close_context()
        except Exception:
            pass

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """items: (token, position, sequence, wants logits)."""
        batch = self._batch
        batch.n_tokens = len(items)
        for j, (token, pos, seq, logits) in enumerate(items):
            batch.token[j] = token
            batch.pos[j] = pos
            batch.n_seq_id[j] = 1
            batch.seq_id[j][0] = seq
            batch.logits[j] = logits
        rc = self.lib.llama_decode(self._ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc}")

    def _argmax(self, j: int) -> int:
        logits = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self._ctx, j), shape=(self.n_vocab,))
        return int(logits.argmax())          # first maximum, like llama.cpp's greedy sampler

    def _run_batched(self, prompts: list[list[int]]):
        lib = self.lib
        longest = max(len(p) for p in prompts) + self.max_new_tokens
        self._open_context(min(self.n_ctx, -(-longest // 256) * 256))
        prefix_seq = self.batch_size
        if not (self._prefix and all(len(p) > len(self._prefix) and p[: len(self._prefix)] == self._prefix
                                     for p in prompts)):
            self._prefix = common_prefix(prompts)
            lib.llama_memory_clear(self._mem, True)
            for s in range(0, len(self._prefix), self._n_batch):
                chunk = self._prefix[s: s + self._n_batch]
                self._decode([(t, s + k, prefix_seq, False) for k, t in enumerate(chunk)])
        prefix = self._prefix
        shared = len(prefix)

        queue = deque(range(len(prompts)))
        slots: list[_Slot | None] = [None] * self.batch_size
        while queue or any(slots):
            for s in range(self.batch_size):
                if slots[s] is None and queue:
                    i = queue.popleft()
                    lib.llama_memory_seq_rm(self._mem, s, -1, -1)
                    lib.llama_memory_seq_cp(self._mem, prefix_seq, s, -1, -1)  # the prefix sequence holds only the prefix
                    slots[s] = _Slot(i, prompts[i][shared:], shared, time.perf_counter())
            items: list[tuple[int, int, int, bool]] = []
            wants: list[tuple[int, int]] = []       # (slot, row in batch)
            for s, slot in enumerate(slots):        # answers first: one token each
                if slot is not None and not slot.pending:
                    wants.append((s, len(items)))
                    items.append((slot.out[-1], slot.pos, s, True))
                    slot.pos += 1
            for s, slot in enumerate(slots):        # then prompts, as much as fits
                if slot is None or not slot.pending or len(items) >= self._n_batch:
                    continue
                take = slot.pending[: self._n_batch - len(items)]
                for k, t in enumerate(take):
                    last = k == len(take) - 1 and len(take) == len(slot.pending)
                    items.append((t, slot.pos + k, s, last))
                    if last:
                        wants.append((s, len(items) - 1))
                slot.pos += len(take)
                slot.pending = slot.pending[len(take):]
            self._decode(items)
            for s, row in wants:
                slot = slots[s]
                token = self._argmax(row)
                ended = self.is_end(token)
                if not ended:
                    slot.out.append(token)
                if ended or len(slot.out) >= self.max_new_tokens:
                    yield slot.index, self._finish(len(prompts[slot.index]), slot.out, not ended, slot.start)
                    slots[s] = None
                    lib.llama_memory_seq_rm(self._mem, s, -1, -1)


def common_prefix(prompts: list[list[int]]) -> list[int]:
    """Longest prefix of all prompts, leaving each at least one own token to decode."""
    prefix = prompts[0][: min(len(p) for p in prompts) - 1]
    for p in prompts:
        n = 0
        while n < len(prefix) and p[n] == prefix[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


# -- worker processes --


def visible_gpus() -> list[str]:
    """The GPUs this process may use (CUDA_VISIBLE_DEVICES order), or none without CUDA."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def worker_devices(workers: int | str, gpus: Sequence[str]) -> list[str | None]:
    """One entry per eval worker: the GPU it is pinned to, or None (CPU). eval.workers auto = one per GPU (1 on
    CPU); a number of workers on GPUs takes the GPUs round robin."""
    if workers == "auto":
        return list(gpus) or [None]
    return [gpus[i % len(gpus)] if gpus else None for i in range(int(workers))]


def complete_all(gguf: Path | str, system: str, articles: Sequence[str], *, n_ctx: int, n_threads: int,
                 workers: int | str, max_new_tokens: int, batch_size: int, n_batch: int = 512,
                 grammar_fields: Sequence[str] | None = None, progress: Callable[[int], None] | None = None,
                 gpus: Sequence[str] | None = None) -> list[Completion]:
    """Answer every article in llama.cpp worker processes (jinmei.infer.llama_worker: no torch there, whatever this
    process has loaded), eval.workers of them (auto = one per GPU), each pinned to its GPU, the `n_threads` CPU
    threads split among them. Answers do not depend on the split."""
    devices = worker_devices(workers, visible_gpus() if gpus is None else list(gpus))
    devices = devices[:max(1, min(len(devices), len(articles) or 1))]
    kwargs = dict(gguf=str(gguf), n_ctx=n_ctx, n_threads=max(1, n_threads // len(devices)),
                  max_new_tokens=max_new_tokens, batch_size=batch_size, n_batch=n_batch,
                  grammar_fields=list(grammar_fields) if grammar_fields else None)
    if len(devices) == 1:  # one worker decodes them all at once: sorted by prefix, one continuous batch
        chunk = max(1, len(articles))
    else:                  # several share them in chunks small enough that every worker gets work
        chunk = max(1, min(max(1, batch_size) * 4, -(-len(articles) // (2 * len(devices)))))
    tasks: queue.Queue = queue.Queue()
    for s in range(0, len(articles), chunk):
        tasks.put({"system": system, "indices": list(range(s, min(s + chunk, len(articles)))),
                   "articles": list(articles[s: s + chunk])})
    results: dict[int, Completion] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def drive(device: str | None) -> None:
        try:
            with _worker(kwargs, device) as proc:
                while not failures:
                    try:
                        task = tasks.get_nowait()
                    except queue.Empty:
                        break
                    proc.stdin.write(json.dumps(task, ensure_ascii=False) + "\n")
                    proc.stdin.flush()
                    reply = _read_reply(proc, progress)
                    if reply is None:
                        break
                    with lock:
                        results.update((i, Completion(**c)) for i, c in zip(task["indices"], reply))
        except JinmeiError as e:
            failures.append(str(e))

    threads = [threading.Thread(target=drive, args=(d,), daemon=True) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise JinmeiError(failures[0])
    missing = [i for i in range(len(articles)) if i not in results]
    if missing:
        raise JinmeiError(f"llama.cpp workers returned no answer for {len(missing)} articles (first #{missing[0]})")
    return [results[i] for i in range(len(articles))]


REPLY = "JINMEI "  # marks the worker's answer lines; anything else a library prints on stdout is skipped
DONE = "JINMEI-DONE "  # + n: n more articles of the current task finished (Engine.complete's progress)


def serve(argv=None) -> None:
    """The worker's loop (python -m jinmei.infer.llama_worker): stdin carries one JSON document per line, first Engine's
    keyword arguments, then tasks {"system", "indices", "articles"}; each answer is one stdout line, REPLY + a JSON
    list of Completion dicts, after a DONE line per finished article. EOF ends it. A first document
    {"call": "module:function", "kwargs": {...}} instead runs that one function (in_worker) and answers its result."""
    from dataclasses import asdict

    def done(n: int) -> None:
        sys.stdout.write(f"{DONE}{n}\n")
        sys.stdout.flush()

    first = json.loads(sys.stdin.readline())
    if "call" in first:
        import importlib

        module, function = first["call"].split(":")
        result = getattr(importlib.import_module(module), function)(**first["kwargs"])
        sys.stdout.write(REPLY + json.dumps(result, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    engine = Engine(**first)
    for line in sys.stdin:
        task = json.loads(line)
        answers = engine.complete(task["system"], task["articles"], done)
        sys.stdout.write(REPLY + json.dumps([asdict(c) for c in answers], ensure_ascii=False) + "\n")
        sys.stdout.flush()


def in_worker(function: str, **kwargs: Any) -> Any:
    """`module:function(**kwargs)` run in a llama.cpp worker process, its JSON result returned. Every step outside
    eval that loads a GGUF (quantize's k-quantization and tokenizer parity, sanity's vocab check, the set-up check)
    goes through here, so that no stage's own process, which holds torch, ever loads one (jinmei.infer.llama_worker)."""
    reply = None
    with _worker({"call": function, "kwargs": kwargs}, None) as proc:
        reply = _read_reply(proc, None)
    if reply is None:
        raise JinmeiError(f"the llama.cpp worker ended without answering {function}")
    return reply


@contextlib.contextmanager
def _worker(first: dict[str, Any], device: str | None) -> Iterator[subprocess.Popen]:
    """A started worker, its stderr passed on; on leaving, its stdin closed and its exit awaited. A failed exit
    raises the worker's own one-line error, or how it died, as JinmeiError."""
    proc = _start_worker(first, device)
    said: list[str] = []  # the worker's own "error: ..." line, if it had one
    echo = threading.Thread(target=_forward_stderr, args=(proc, said), daemon=True)
    echo.start()
    try:
        yield proc
    except (BrokenPipeError, OSError):
        pass  # the worker died: its exit status says how, below
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        code = proc.wait()
        echo.join()
    if code != 0:
        raise JinmeiError(said[-1] if said and code > 0 else _worker_death(code, device))


def _start_worker(kwargs: dict[str, Any], device: str | None) -> subprocess.Popen:
    env = dict(os.environ)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device  # llama.cpp reads it once, when it loads
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(x for x in (package_root, env.get("PYTHONPATH")) if x)
    proc = subprocess.Popen([sys.executable, "-m", "jinmei.infer.llama_worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            errors="replace", env=env)
    proc.stdin.write(json.dumps(kwargs) + "\n")
    proc.stdin.flush()
    return proc


def _forward_stderr(proc: subprocess.Popen, said: list[str]) -> None:
    """Pass the worker's messages (llama.cpp's log, a traceback) on as they come; keep its JinmeiError line, so the
    stage ends with the worker's own one-line error (run_main prints those as "error: ...")."""
    for line in proc.stderr:
        if line.startswith("error: "):
            said.append(line.removeprefix("error: ").rstrip("\n"))
        else:
            sys.stderr.write(line)
    sys.stderr.flush()


def _read_reply(proc: subprocess.Popen, progress: Callable[[int], None] | None) -> Any:
    for line in proc.stdout:
        if line.startswith(DONE):
            if progress:
                progress(int(line[len(DONE):]))
        elif line.startswith(REPLY):
            return json.loads(line[len(REPLY):])
    return None  # EOF: the worker ended without answering


def _cuda_build() -> bool:
    """Whether the installed llama-cpp-python is a GPU (CUDA) build: llama_supports_gpu_offload(), asked in a fresh
    interpreter as scripts/setup.sh asks it (this process may hold torch, beside which no llama.cpp may load:
    jinmei.infer.llama_worker); where that cannot answer, whether the package ships a CUDA library."""
    import importlib.util

    probe = "import llama_cpp; print(int(llama_cpp.llama_supports_gpu_offload()))"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
        answer = done.stdout.strip()[-1:]
        if done.returncode == 0 and answer in ("0", "1"):
            return answer == "1"
    spec = importlib.util.find_spec("llama_cpp")
    folders = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    return any(next(f.rglob("*ggml-cuda*"), None) for f in folders)


def _worker_death(code: int, device: str | None) -> str:
    where = f" pinned to GPU {device}" if device is not None else ""
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    hint = ""
    if code < 0 and _cuda_build():
        hint = (" A SIGSEGV on a GPU machine is llama-cpp-python's CUDA build crashing (README \"GPU\"); the "
                "portable CPU build avoids it: pip uninstall -y llama-cpp-python && bash scripts/setup.sh")
    elif code == -signal.SIGILL:
        hint = (" llama-cpp-python was built for CPU instructions this machine cannot run; rebuild it portable: "
                "pip uninstall -y llama-cpp-python && bash scripts/setup.sh")
    elif code < 0:
        hint = " llama.cpp stopped on an error of its own; the last of its messages above names it."
    return f"the llama.cpp worker{where} {how} (its messages are above).{hint}"


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


__all__ = ["Completion", "Engine", "answer_grammar", "answer_schema", "complete_all",
           "gguf_path", "in_worker", "load_llama", "naive_complete", "same_answer", "GgufChat"]
