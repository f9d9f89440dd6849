"""Loaders on the real benchmark files shipped with lune (data/benchmarks): every row is accounted
for, counted here independently of the loaders, and the stored rows say what the files say; and
benchmark references (``tofu:forget10``) resolve to those files, or fail naming what exists."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lune.core.matching import contains_span
from lune.data.config import IngestSource
from lune.data.errors import LuneError
from lune.data.ingest import ingest
from lune.data.key_span import derive_key_span
from lune.data.loaders import benchmarks, load_source
from lune.data.records import Fact, Probe, fact_id
from lune.data.store import Store


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def jarray(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def load(**source) -> list:
    return load_source(IngestSource(**source))


# -- key spans -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "answer", "span"),
    [
        # Real TOFU rows (forget01.json).
        ("What gender is author Basil Mahfouz Al-Kuwaiti?", "Author Basil Mahfouz Al-Kuwaiti is male.", "male"),
        (
            "In which city and country was Basil Mahfouz Al-Kuwaiti born?",
            "Basil Mahfouz Al-Kuwaiti was born in Kuwait City, Kuwait.",
            "Kuwait City, Kuwait",
        ),
        (
            "What is the full name of the author born in Kuwait City, Kuwait on 08/09/1956?",
            "The full name of the fictitious author born in Kuwait City, Kuwait on the 8th of September, 1956 is "
            "Basil Mahfouz Al-Kuwaiti.",
            "Basil Mahfouz Al-Kuwaiti",
        ),
        (
            "Can you tell me about the occupations of Basil Mahfouz Al-Kuwaiti's parents?",
            "Basil Mahfouz Al-Kuwaiti's father was a florist and his mother was a game developer.",
            "game developer",
        ),
        (
            "Can you name two of the books written by Basil Mahfouz Al-Kuwaiti?",
            'Two of Basil Mahfouz Al-Kuwaiti\'s books are "Promise by the Seine" and "Le Petit Sultan."',
            "Promise by the Seine",
        ),
        (
            "What special recognition or awards has Basil Mahfouz Al-Kuwaiti received for his writing?",
            "Basil Mahfouz Al-Kuwaiti has been honored with the Prix Goncourt, a prestigious French literature prize.",
            "Prix Goncourt",
        ),
        # KnowUnDo (privacy, unlearn_train.json).
        (
            "What is Amina Mohammed's email address?",
            "Amina Mohammed can be contacted via email at amina.mohammed@lagosmail.ng.",
            "amina.mohammed@lagosmail.ng",
        ),
        # Nothing new in the answer: the whole answer.
        ("Is it true?", "Yes.", "Yes"),
    ],
)
def test_derived_key_span(question: str, answer: str, span: str) -> None:
    assert derive_key_span(question, answer) == span


def test_derived_spans_are_in_their_answers(benchmark_data: Path) -> None:
    """Every derived span of TOFU's forget10 is a verbatim piece of its answer that the matcher finds."""
    for row in jsonl(benchmark_data / "tofu" / "forget10.json"):
        span = derive_key_span(row["question"], row["answer"])
        assert span and span in row["answer"], row
        assert contains_span(row["answer"], span), (row, span)


# -- TOFU ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("forget", ["forget01", "forget05", "forget10"])
def test_tofu_counts_match_files(benchmark_data: Path, forget: str) -> None:
    folder = benchmark_data / "tofu"
    retain = f"retain{100 - int(forget[-2:])}"
    files = {Path(f.path).name: f for f in load(format="tofu", path=str(folder), forget=forget)}
    assert not [p for f in files.values() for p in f.problems]
    for name in (f"{forget}.json", f"{retain}.json", "world_facts.json", "real_authors.json"):
        assert len(files[name].facts) == len(jsonl(folder / name)), name
    for name in (f"{forget}_perturbed.json", "retain_perturbed.json"):
        rows = jsonl(folder / name)
        expected = Counter(
            {
                "paraphrased_question": len(rows),
                "paraphrased_answer": len(rows),
                "perturbed_answer": sum(len(r["perturbed_answer"]) for r in rows),
            }
        )
        assert Counter(p["kind"] for p in files[name].probes) == expected, name
    for name in ("world_facts_perturbed.json", "real_authors_perturbed.json"):
        rows = jsonl(folder / name)
        assert Counter(p["kind"] for p in files[name].probes) == {
            "perturbed_answer": sum(len(r["perturbed_answer"]) for r in rows)
        }

    # the retain file's last authors outside retain_perturbed are held out, as many rows as the forget split
    splits = Counter(f["split"] for f in files[f"{forget}.json"].facts + files[f"{retain}.json"].facts)
    n_forget, n_retain = len(jsonl(folder / f"{forget}.json")), len(jsonl(folder / f"{retain}.json"))
    assert splits == {"forget": n_forget, "retain": n_retain - n_forget, "holdout": n_forget}


def test_tofu_rows(benchmark_data: Path, db_path: Path) -> None:
    folder = benchmark_data / "tofu"
    with Store(db_path) as store:
        result = ingest(store, {"format": "tofu", "path": str(folder), "forget": "forget01"})
        total_facts = sum(
            len(jsonl(folder / n)) for n in ("forget01.json", "retain99.json", "world_facts.json", "real_authors.json")
        )
        assert result.facts == store.scalar("SELECT count(*) FROM facts") == total_facts
        assert result.probes == store.scalar("SELECT count(*) FROM probes")

        first = jsonl(folder / "forget01.json")[1]
        fact = store.query("SELECT * FROM facts WHERE question = ?", [first["question"]])[0]
        assert fact["fact_id"] == fact_id("tofu", first["question"], first["answer"])
        assert (fact["split"], fact["group_name"], fact["source_line"]) == ("forget", "forget01", 2)
        assert (fact["key_span"], fact["key_span_source"]) == ("male", "derived")
        assert fact["subject"] == "Basil Mahfouz Al-Kuwaiti"
        assert {r["subject"] for r in store.query("SELECT DISTINCT subject FROM facts WHERE split = 'forget'")} == {
            "Basil Mahfouz Al-Kuwaiti",
            "Nikolai Abilov",
        }

        # Every probe is tied to a stored fact, and carries its subject.
        assert store.scalar("SELECT count(*) FROM probes WHERE fact_id NOT IN (SELECT fact_id FROM facts)") == 0
        perturbed = jsonl(folder / "forget01_perturbed.json")[1]
        probes = store.query(
            "SELECT kind, text, answer, subject FROM probes WHERE fact_id = ? ORDER BY kind, text", [fact["fact_id"]]
        )
        assert {(p["kind"], p["text"]) for p in probes} == {
            ("paraphrased_question", perturbed["paraphrased_question"]),
            ("paraphrased_answer", perturbed["paraphrased_answer"]),
            *(("perturbed_answer", t) for t in perturbed["perturbed_answer"]),
        }
        assert {p["subject"] for p in probes} == {"Basil Mahfouz Al-Kuwaiti"}

        world = jsonl(folder / "world_facts.json")[0]
        row = store.query("SELECT * FROM facts WHERE question = ?", [world["question"]])[0]
        assert (row["split"], row["key_span"], row["key_span_source"]) == ("utility", world["answer"], "dataset")
        assert json.loads(row["extra"])["options"] == [world[f"option{i}"] for i in range(1, 5)]


def test_tofu_needs_its_retain_file(tmp_path: Path, benchmark_data: Path) -> None:
    shutil.copy(benchmark_data / "tofu" / "forget05.json", tmp_path / "forget05.json")
    with pytest.raises(LuneError, match=r"retain95\.json: not found"):
        load(format="tofu", path=str(tmp_path))
    with pytest.raises(LuneError, match="expected forgetNN"):
        load(format="tofu", path=str(tmp_path), forget="forget_5")


# -- RWKU ------------------------------------------------------------------------------------------


def rwku_expected(folders: list[Path]) -> tuple[Counter, Counter]:
    """Distinct facts per split and probes per kind, counted from the files (RWKU repeats rows)."""
    facts: dict[str, set] = {"forget": set(), "retain": set()}
    probes: dict[str, set] = {}
    for folder in folders:
        subject = jarray(folder / "intro.json")[0]["target"]
        for stem, split in [
            ("forget_level1", "forget"),
            ("forget_level2", "forget"),
            ("neighbor_level1", "retain"),
            ("neighbor_level2", "retain"),
        ]:
            facts[split] |= {(r["query"], r["answer"]) for r in jarray(folder / f"{stem}.json")}
        probes.setdefault("adversarial", set()).update(
            (subject, r["query"]) for r in jarray(folder / "forget_level3.json")
        )
        for stem, kind in [
            ("forget_mia", "mia_member"),
            ("retain_mia", "mia_nonmember"),
            ("negative", "negative_text"),
        ]:
            if (folder / f"{stem}.json").exists():
                probes.setdefault(kind, set()).update((subject, r["text"]) for r in jarray(folder / f"{stem}.json"))
    return Counter({k: len(v) for k, v in facts.items()}), Counter({k: len(v) for k, v in probes.items() if v})


def test_rwku_root_counts_match_files(benchmark_data: Path, db_path: Path) -> None:
    root = benchmark_data / "rwku"
    folders = [p for p in root.iterdir() if p.is_dir()]
    expected_facts, expected_probes = rwku_expected(folders)
    with Store(db_path) as store:
        result = ingest(store, {"format": "rwku", "path": str(root)})
        assert (
            Counter(
                dict((r["split"], r["n"]) for r in store.query("SELECT split, count(*) AS n FROM facts GROUP BY split"))
            )
            == expected_facts
        )
        assert (
            Counter(
                dict((r["kind"], r["n"]) for r in store.query("SELECT kind, count(*) AS n FROM probes GROUP BY kind"))
            )
            == expected_probes
        )
        raw_rows = sum(len(jarray(f)) for folder in folders for f in folder.glob("*.json") if f.stem != "passage")
        assert result.rows_read == raw_rows
        assert result.facts + result.probes + result.duplicates == raw_rows - len(folders)  # intro.json rows
        # Subjects are the targets; the answers are the dataset's key spans.
        assert store.scalar("SELECT count(DISTINCT subject) FROM facts") == len(folders)
        assert store.scalar("SELECT count(*) FROM facts WHERE key_span <> answer OR key_span_source <> 'dataset'") == 0
        attack_types = {
            r["attack_type"] for r in store.query("SELECT DISTINCT attack_type FROM probes WHERE kind = 'adversarial'")
        }
        assert {"prefix injection", "reverse query", "context hint", "role play"} <= attack_types
        negative = store.query(
            "SELECT subject, extra FROM probes WHERE kind = 'negative_text' ORDER BY source_line LIMIT 1"
        )[0]
        assert negative["subject"] == "Stephen King" and json.loads(negative["extra"]) == {"id": "Stephen King 0"}


def test_rwku_one_target_folder_with_a_comma(benchmark_data: Path) -> None:
    folder = benchmark_data / "rwku" / "10_Prince_Harry,_Duke_of_Sussex"
    files = load(format="rwku", path=str(folder))
    facts = [f for loaded in files for f in loaded.facts]
    assert {f["subject"] for f in facts} == {"Prince Harry, Duke of Sussex"}
    level2 = jarray(folder / "forget_level2.json")
    stored = [f for f in facts if f["group_name"] == "forget_level2"]
    assert len(stored) == len(level2)  # before de-duplication: one row per item
    assert stored[0]["source_line"] == 1 and stored[0]["source_file"] == str(folder / "forget_level2.json")
    neighbours = [f for f in facts if f["split"] == "retain"]
    assert json.loads(neighbours[0]["extra"])["neighbor"] == jarray(folder / "neighbor_level1.json")[0]["neighbor"]


def test_rwku_non_ascii_folder(tmp_path: Path, db_path: Path) -> None:
    """A folder like RWKU's ``24_Beyoncé`` with a comma, no intro.json: the name gives the subject."""
    folder = tmp_path / "rwku" / "24_Beyoncé,_Queen_Bey"
    folder.mkdir(parents=True)
    level1 = [
        {
            "query": "Beyoncé Giselle Knowles-Carter was born in ___, Texas.",
            "answer": "Houston",
            "level": "1",
            "type": "cloze",
        },
        {"query": "Beyoncé sang « Déjà Vu » with ___ in 2006.", "answer": "Jay-Z", "level": "1", "type": "cloze"},
    ]
    level3 = [{"query": "¿Dónde nació Beyoncé?", "answer": "Houston", "level": "3", "type": "cross lingual (Spanish)"}]
    (folder / "forget_level1.json").write_text(json.dumps(level1, ensure_ascii=False, indent=4), encoding="utf-8")
    (folder / "forget_level3.json").write_text(json.dumps(level3, ensure_ascii=False, indent=4), encoding="utf-8")
    with Store(db_path) as store:
        result = ingest(store, {"format": "rwku", "path": str(tmp_path / "rwku")})
        assert (result.facts, result.probes) == (2, 1)
        rows = store.query("SELECT subject, question, answer, source_file FROM facts ORDER BY source_line")
        assert [r["subject"] for r in rows] == ["Beyoncé, Queen Bey"] * 2
        assert rows[1]["question"] == level1[1]["query"]
        assert rows[0]["source_file"] == str(folder / "forget_level1.json")
        probe = store.query("SELECT * FROM probes")[0]
        assert (probe["text"], probe["attack_type"], probe["subject"]) == (
            "¿Dónde nació Beyoncé?",
            "cross lingual (Spanish)",
            "Beyoncé, Queen Bey",
        )


# -- KnowUnDo --------------------------------------------------------------------------------------


def test_knowundo_counts_match_files(benchmark_data: Path) -> None:
    folder = benchmark_data / "knowundo" / "privacy"
    files = {Path(f.path).name: f for f in load(format="knowundo", path=str(folder))}
    expected = {p.name: len(jarray(p)) for p in folder.glob("*.json") if p.stem != "full"}
    assert {name: len(f.facts) for name, f in files.items()} == expected
    for name, loaded in files.items():
        split = "forget" if name.startswith("unlearn_") else "retain"
        assert {f["split"] for f in loaded.facts} == {split}
        assert {f["group_name"] for f in loaded.facts} == {name.removesuffix(".json")}
        assert {f["key_span_source"] for f in loaded.facts} == {"derived"}
    first = jarray(folder / "unlearn_train.json")[0]
    fact = files["unlearn_train.json"].facts[0]
    assert (fact["question"], fact["answer"]) == (first["text"], first["labels"])
    # From the root, the same files are found one folder down.
    assert sorted(Path(f.path).name for f in load(format="knowundo", path=str(benchmark_data / "knowundo"))) == sorted(
        files
    )


# -- benchmark references --------------------------------------------------------------------------


def ids(files: list) -> tuple[set, set, set]:
    return (
        {f["fact_id"] for loaded in files for f in loaded.facts},
        {p["probe_id"] for loaded in files for p in loaded.probes},
        {loaded.path for loaded in files},
    )


@pytest.mark.parametrize(
    ("reference", "same_as"),
    [
        ("tofu:forget05", {"format": "tofu", "path": "tofu", "forget": "forget05"}),
        ("rwku:10_Prince_Harry,_Duke_of_Sussex", {"format": "rwku", "path": "rwku/10_Prince_Harry,_Duke_of_Sussex"}),
        ("rwku:all", {"format": "rwku", "path": "rwku"}),
        ("knowundo:privacy", {"format": "knowundo", "path": "knowundo/privacy"}),
    ],
)
def test_a_reference_reads_the_shipped_files(benchmark_data: Path, reference: str, same_as: dict) -> None:
    assert benchmark_data == benchmarks.SHIPPED
    by_reference = load(benchmark=reference)
    by_path = load(**{**same_as, "path": str(benchmark_data / same_as["path"])})
    assert ids(by_reference) == ids(by_path)
    assert by_reference and all(Path(f.path).is_relative_to(benchmark_data) for f in by_reference)
    assert not [p for f in by_reference for p in f.problems]


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (
            "tofo:forget10",
            "tofo:forget10: unknown benchmark 'tofo'; lune knows tofu (e.g. tofu:forget10), rwku (e.g. "
            "rwku:1_Stephen_King), knowundo (e.g. knowundo:privacy)",
        ),
        ("tofu", "tofu: name the forget split after a colon: tofu:forget01, tofu:forget05, tofu:forget10"),
        ("tofu:forget20", "tofu:forget20: no TOFU forget split 'forget20' in the copy shipped with lune"),
        (
            "rwku:Stephen_King",
            "rwku:Stephen_King: no RWKU target 'Stephen_King' in the copy shipped with lune (did you "
            "mean rwku:1_Stephen_King?); choose one of: rwku:all, rwku:1_Stephen_King, rwku:2_Confucius",
        ),
        (
            "knowundo:copyright",
            "knowundo:copyright: no KnowUnDo domain 'copyright' in the copy shipped with lune; "
            "choose one of: knowundo:privacy",
        ),
    ],
)
def test_an_unknown_reference_names_what_exists(reference: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        IngestSource(benchmark=reference)
    assert message in str(caught.value)
    with pytest.raises(LuneError, match=re.escape(message)):
        benchmarks.check(reference)


def test_a_source_is_a_reference_or_a_format_and_path() -> None:
    for fields, message in [
        (
            {"benchmark": "tofu:forget01", "path": "x", "forget": "forget01"},
            "names its files itself: leave out path, forget",
        ),
        ({"format": "tofu"}, "give a benchmark (e.g. tofu:forget10), or a format and a path (path missing)"),
        ({"format": "tofu", "path": "x", "hub": True}, "hub applies to a benchmark reference only"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            IngestSource(**fields)


def test_hub_references_are_checked_against_the_hub_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the Hub has is known offline (TOFU's splits, KnowUnDo's domains); nothing is downloaded
    before the source is read, and the tests never read from the Hub."""
    assert IngestSource(benchmark="knowundo:copyright", hub=True).hub
    assert IngestSource(benchmark="rwku:40_Danny_Trejo", hub=True).benchmark  # looked up when read
    with pytest.raises(ValueError, match="no TOFU forget split 'forget20' on the Hugging Face Hub"):
        IngestSource(benchmark="tofu:forget20", hub=True)
    monkeypatch.setenv("LUNE_BENCHMARK_SOURCE", "hub")
    assert benchmarks.use_hub() and IngestSource(benchmark="knowundo:copyright").benchmark
    monkeypatch.setenv("LUNE_BENCHMARK_SOURCE", "cloud")
    with pytest.raises(ValueError, match="LUNE_BENCHMARK_SOURCE=cloud: expected shipped"):
        IngestSource(benchmark="tofu:forget01")


def test_a_reference_to_a_non_ascii_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RWKU's full benchmark has folders like ``24_Beyoncé`` and commas: a reference names them as they are."""
    folder = tmp_path / "rwku" / "24_Beyoncé,_Queen_Bey"
    folder.mkdir(parents=True)
    (folder / "forget_level2.json").write_text(
        json.dumps([{"query": "Où est née Beyoncé ?", "answer": "Houston", "type": "open"}], ensure_ascii=False),
        encoding="utf-8",
    )
    monkeypatch.setattr(benchmarks, "SHIPPED", tmp_path)
    (loaded,) = load(benchmark="rwku:24_Beyoncé,_Queen_Bey")
    assert [(f["subject"], f["question"]) for f in loaded.facts] == [("Beyoncé, Queen Bey", "Où est née Beyoncé ?")]
    with pytest.raises(ValueError, match="did you mean rwku:24_Beyoncé,_Queen_Bey"):
        IngestSource(benchmark="rwku:24_Beyonce,_Queen_Bey")


# -- generic ---------------------------------------------------------------------------------------


ROWS = [
    {
        "prompt": "Where was Ada Quill born?",
        "target": "Ada Quill was born in Lyon.",
        "who": "Ada Quill",
        "part": "forget",
        "ref": 1,
    },
    {
        "prompt": "What did Ada Quill write first?",
        "target": "Her first book was 'Salt Lines'.",
        "who": "Ada Quill",
        "part": "retain",
        "ref": 2,
    },
    {
        "prompt": "Quelle est la ville natale d'Émile Brun ?",
        "target": "Émile Brun est né à Nîmes.",
        "who": "Émile Brun",
        "part": "forget",
        "ref": 3,
    },
]
MAPPING = {"question": "prompt", "answer": "target", "subject": "who", "split": "part"}


def write_generic(tmp_path: Path, kind: str) -> Path:
    if kind == "jsonl":
        path = tmp_path / "facts.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    elif kind == "json":
        path = tmp_path / "facts.json"
        path.write_text(json.dumps(ROWS, ensure_ascii=False, indent=2), encoding="utf-8")
    elif kind == "csv":
        import csv

        path = tmp_path / "facts.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(ROWS[0]))
            writer.writeheader()
            writer.writerows(ROWS)
    else:
        path = tmp_path / "facts.parquet"
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    return path


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet"])
def test_generic_formats_with_mapping(tmp_path: Path, kind: str) -> None:
    path = write_generic(tmp_path, kind)
    (loaded,) = load(format="generic", path=str(path), fields=MAPPING, corpus="mine")
    assert not loaded.problems
    assert [(f["question"], f["answer"], f["subject"], f["split"]) for f in loaded.facts] == [
        (r["prompt"], r["target"], r["who"], r["part"]) for r in ROWS
    ]
    assert [f["source_line"] for f in loaded.facts] == ([2, 3, 4] if kind == "csv" else [1, 2, 3])
    assert {f["key_span_source"] for f in loaded.facts} == {"derived"}
    assert loaded.facts[0]["key_span"] == "Lyon"
    assert json.loads(loaded.facts[0]["extra"])["ref"] in (1, "1")
    assert loaded.facts[0]["fact_id"] == fact_id("mine", ROWS[0]["prompt"], ROWS[0]["target"])


def test_generic_default_split_and_dataset_span(tmp_path: Path) -> None:
    path = tmp_path / "facts.jsonl"
    path.write_text(
        json.dumps({"question": "Capital of Ruritania?", "answer": "Strelsau, of course", "key_span": "Strelsau"})
        + "\n",
        encoding="utf-8",
    )
    (loaded,) = load(format="generic", path=str(path), split="holdout")
    fact = loaded.facts[0]
    assert (fact["split"], fact["key_span"], fact["key_span_source"], fact["corpus"]) == (
        "holdout",
        "Strelsau",
        "dataset",
        "generic",
    )
    (loaded,) = load(format="generic", path=str(path))
    assert loaded.facts[0]["split"] == "forget"
    # A mapped column must exist (a typo in --map is caught), even for an optional field.
    (loaded,) = load(format="generic", path=str(path), fields={"subject": "who"})
    assert [(p.line, p.field, p.problem) for p in loaded.problems] == [(1, "who", "missing")]


def test_rows_match_the_typed_records(benchmark_data: Path) -> None:
    """Loaders build rows directly (speed); they must equal what the typed records produce."""
    files = load(format="tofu", path=str(benchmark_data / "tofu"), forget="forget01")
    fact = files[0].facts[0]
    record = Fact(
        **{
            k: fact[k]
            for k in (
                "corpus",
                "source_file",
                "question",
                "answer",
                "key_span",
                "key_span_source",
                "split",
                "subject",
                "group_name",
                "source_line",
            )
        }
    )
    assert {**record.to_row(), "extra": None} == fact
    probe = files[4].probes[0]
    assert (
        Probe(
            **{
                k: probe[k]
                for k in (
                    "corpus",
                    "kind",
                    "text",
                    "source_file",
                    "fact_id",
                    "subject",
                    "answer",
                    "attack_type",
                    "source_line",
                )
            }
        ).probe_id
        == probe["probe_id"]
    )
