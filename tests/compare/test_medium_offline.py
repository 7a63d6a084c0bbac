"""The ``medium`` study's route to a machine without network, end to end at a toy size: select the kernel subset,
pack it with the out-of-domain corpora into one archive, unpack it into a fresh cache with the network disabled,
and run ``retnet compare --preset medium --only retnet,transformer --seeds 0`` from it (scaled down)."""

from __future__ import annotations

import json
import logging
import random
import socket
import subprocess
from dataclasses import replace

import pytest

from retnet.cli.__main__ import main
from retnet.compare import load_compare_config
from retnet.data.corpora import CORPORA, corpus_dir, fetch_corpus

from .test_compare_e2e import WORDS

OOD = ("sotu", "shakespeare", "python-docs")


def fake_kernel(cache, rng: random.Random) -> None:
    """A fetched fake "linux" corpus: C files in a few folders, plus files the subset leaves out."""
    text = corpus_dir("linux", cache) / "text" / "linux-source-6.1"
    for folder in ("kernel", "mm", "fs/ext4", "drivers/net", "lib"):
        (text / folder).mkdir(parents=True)
        for i in range(6):
            body = "\n".join(f"static int {rng.choice(WORDS)}_{j}(int x)\n{{\n\treturn x + {rng.randint(0, 99)};\n}}"
                             for j in range(40))  # fmt: skip
            (text / folder / f"f{i}.{'ch'[i % 2]}").write_text(
                f"/* {folder} {i} */\n#include <linux/kernel.h>\n{body}\n"
            )
        (text / folder / "Kconfig.txt").write_text("config NOT_C\n")
    (text / "huge.h").write_text("#define REG 0x1\n" * 20_000)  # past max_file_bytes
    (corpus_dir("linux", cache) / "FETCHED.json").write_text(json.dumps({"name": "linux", "archive": "fake.deb"}))


def fake_prose(cache, rng: random.Random) -> None:
    for k, name in enumerate(OOD):
        text = corpus_dir(name, cache) / "text"
        text.mkdir(parents=True)
        for i in range(8):
            (text / f"{name}-{i}.txt").write_text(" ".join(rng.choice(WORDS[k:]) for _ in range(300)) + ".\n")
        (corpus_dir(name, cache) / "FETCHED.json").write_text(json.dumps({"name": name, "archive": f"{name}.tgz"}))


def test_medium_runs_from_an_unpacked_archive_without_network(tmp_path, monkeypatch, caplog):
    from retnet.compare import report
    from retnet.training import trainer

    # plots take most of a toy run's time; they are tested end to end elsewhere
    monkeypatch.setattr(trainer, "plot_loss_curve", lambda run_dir: None)
    for plot in ("plot_loss_curves", "plot_perplexity"):
        monkeypatch.setattr(report, plot, lambda *args, **kwargs: None)
    subset = load_compare_config("medium").data.corpus
    # the registered subset, with a budget for the toy kernel and without the pin of the real one's digest
    monkeypatch.setitem(CORPORA, subset, replace(CORPORA[subset], sha256="", max_bytes=60_000, max_file_bytes=50_000))
    src, dest, archive = tmp_path / "networked", tmp_path / "gpu-cache", tmp_path / "corpora.tar.xz"
    rng = random.Random(0)
    fake_kernel(src, rng)
    fake_prose(src, rng)
    fetch_corpus(subset, src, downloader=None)
    assert main(["data", "pack", str(archive), subset, *OOD, "--cache-dir", str(src)]) == 0
    sha = (tmp_path / "corpora.tar.xz.sha256").read_text().strip()

    run_process = subprocess.run

    def no_registry_client(cmd, *args, **kwargs):
        if any(word in ("pip", "npm", "apt-get") for word in cmd):
            pytest.fail(f"a registry client started in an offline run: {cmd}")
        return run_process(cmd, *args, **kwargs)  # e.g. git for the environment stamp

    with monkeypatch.context() as m:
        m.setattr(socket.socket, "connect", lambda *a, **k: pytest.fail("network use in an offline run"))
        m.setattr(subprocess, "run", no_registry_client)
        assert main(["data", "unpack", str(archive), "--cache-dir", str(dest), "--sha256", sha]) == 0
        run = tmp_path / "run"
        argv = [
            "compare", "--preset", "medium", "--only", "retnet,transformer", "--seeds", "0", "--out", str(run),
            f"--data.cache_dir={dest}", "--data.fetch=false", "--compile=false", "--precision=fp32",
            "--data.vocab_size=320", "--data.seq_len=32", "--data.workers=1", "--batch_size=2", "--steps=5",
            "--optim.warmup_steps=1", "--log_every=5", "--checkpoint.every=5", "--model.hidden_size=32",
            "--model.num_heads=1", "--model.value_dim=64", "--model.ffn_dim=64", "--model.num_hidden_layers=1",
            "--baseline.num_heads=2", "--baseline.max_position_embeddings=32", "--compare.eval_tokens=128",
            "--compare.ood_max_bytes=4000", "--compare.bpe_train_bytes=20000",
        ]  # fmt: skip
        with caplog.at_level(logging.INFO, logger="retnet.data.prepare"):
            assert main(argv) == 0
    prepared = [r.getMessage() for r in caplog.records if r.getMessage().startswith("prepared ")]
    assert sum("in_domain" in msg for msg in prepared) == 1  # one in-domain dataset for both architectures
    doc = json.loads((run / "results.json").read_text())
    assert set(doc["results"]) == {"retnet", "transformer"}
    for r in doc["results"].values():
        assert r["eval"]["in_domain"]["perplexity"] > 1 and set(r["eval"]["out_of_domain"]) == set(OOD)
    assert set(doc["meta"]["sweep"]["results"]) == {"retnet", "transformer"}  # the preset's four-rate sweep ran
    fetched = doc["meta"]["corpora"]["fetched"]
    assert set(fetched) == {subset, *OOD} and all(f["archive_sha256"] == sha for f in fetched.values())
    assert fetched[subset]["packed_from"]["subset_of"] == "linux"
    manifest = json.loads((run / "data" / "in_domain" / "manifest.json").read_text())
    assert manifest["source"] == subset and 0 < manifest["tokenizer"]["trained_on"]["bytes"] <= 20_000
    assert doc["meta"]["train"]["epochs"] == pytest.approx(320 / manifest["splits"]["train"]["tokens"])
