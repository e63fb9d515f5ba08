"""GET /api/v1/paths: existence checks and browsing under the allowed roots, confined like model paths
(the ``roots`` fixture: a corpus, a benchmark folder, a model folder, a trace file, and a symlink that
points out of the roots)."""

from __future__ import annotations


def test_the_roots_are_listed_when_no_path_is_given(client, roots):
    info = client.get("/api/v1/paths").json()
    assert info["ok"] and info["roots"] == [str(roots.resolve())]
    assert [e["path"] for e in info["entries"]] == [str(roots.resolve())]


def test_a_folder_inside_lists_its_entries_folders_first(client, roots):
    info = client.get("/api/v1/paths", params={"path": str(roots)}).json()
    assert info["ok"] and info["exists"] and info["is_dir"]
    names = [(e["name"], e["is_dir"]) for e in info["entries"]]
    # the roots fixture's children, as the file system has them: folders first, then files, by name
    expected = sorted(((c.name, c.is_dir()) for c in roots.iterdir()), key=lambda t: (not t[1], t[0].lower()))
    assert names == expected
    corpus = next(e for e in info["entries"] if e["name"] == "corpus.txt")
    assert corpus["size"] == len("some text\n") and corpus["path"] == str(roots.resolve() / "corpus.txt")


def test_an_existing_corpus_and_benchmark_folder_are_ok(client, roots):
    corpus = client.get("/api/v1/paths", params={"path": str(roots / "corpus.txt"), "kind": "corpus"}).json()
    assert corpus["ok"] and corpus["exists"] and not corpus["is_dir"] and corpus["problem"] is None
    assert corpus["size"] == len("some text\n")
    bench = client.get("/api/v1/paths", params={"path": "bench/cmmlu", "kind": "benchmark"}).json()
    assert bench["ok"] and bench["resolved"] == str((roots / "bench" / "cmmlu").resolve())  # relative: under a root


def test_a_missing_file_or_the_wrong_kind_says_so_in_one_line(client, roots):
    missing = client.get("/api/v1/paths", params={"path": str(roots / "nope.txt"), "kind": "corpus"})
    assert missing.status_code == 200
    body = missing.json()
    assert not body["exists"] and not body["ok"] and body["problem"] == f"corpus {str(roots / 'nope.txt')!r} does not exist"
    not_a_folder = client.get("/api/v1/paths", params={"path": str(roots / "corpus.txt"), "kind": "benchmark"}).json()
    assert not not_a_folder["ok"] and "is not a folder" in not_a_folder["problem"]
    not_a_file = client.get("/api/v1/paths", params={"path": str(roots / "bench"), "kind": "task-file"}).json()
    assert not not_a_file["ok"] and "is not a file" in not_a_file["problem"]


def test_paths_outside_the_roots_are_refused_like_model_paths(client, roots, tmp_path):
    for path in (str(tmp_path / "outside" / "model"), str(roots / ".." / "outside"), str(roots / "escape"), "/etc"):
        response = client.get("/api/v1/paths", params={"path": path, "kind": "corpus"})
        assert response.status_code == 400, path
        assert response.json()["detail"] == f"corpus {path!r} is outside the allowed roots"


def test_a_share_link_cannot_browse(make_client):
    client = make_client(auth="token", secret_key="s" * 32)
    assert client.get("/api/v1/paths").status_code == 401
    assert client.get("/api/v1/paths", params={"share": "0" * 32 + ".x"}).status_code == 401


def test_corpora_and_benchmarks_used_before_are_offered_once_newest_first(client, roots):
    from api_helpers import API, experiment_body, register

    model = register(client)
    (roots / "other.txt").write_text("more text\n")
    (roots / "bench" / "ceval").mkdir()
    bodies = [experiment_body(model["id"]),  # corpus.txt, cmmlu:bench/cmmlu
              experiment_body(model["id"], corpus="other.txt", benchmarks=["ceval:bench/ceval", "lm-eval:arc_easy"]),
              experiment_body(model["id"], benchmarks=["cmmlu:bench/cmmlu"])]
    for body in bodies:
        assert client.post(f"{API}/experiments", json=body).status_code == 201
    (roots / "other.txt").unlink()  # gone since it was used
    used = client.get(f"{API}/paths/used").json()
    root = roots.resolve()
    assert [(c["path"], c["exists"]) for c in used["corpora"]] == [(str(root / "corpus.txt"), True),
                                                                   (str(root / "other.txt"), False)]
    assert [(b["kind"], b["path"], b["exists"]) for b in used["benchmarks"]] == [
        ("cmmlu", str(root / "bench" / "cmmlu"), True), ("ceval", str(root / "bench" / "ceval"), True),
        ("lm-eval", "arc_easy", None)]


def test_an_unreadable_path_is_listed_and_checked_without_failing(client, roots, monkeypatch):
    """A path the service may not stat (permissions; simulated, as the tests may run as root): listed,
    and checked as not usable, instead of a 500."""
    from pathlib import Path

    (roots / "locked").mkdir()
    real = Path.stat

    def stat(self, *args, **kwargs):
        if self.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    listed = client.get("/api/v1/paths", params={"path": str(roots)})
    assert listed.status_code == 200 and "locked" in [e["name"] for e in listed.json()["entries"]]
    checked = client.get("/api/v1/paths", params={"path": str(roots / "locked"), "kind": "benchmark"})
    assert checked.status_code == 200 and checked.json()["ok"] is False


def test_corpora_and_benchmarks_are_registered_by_name_and_confined(client, roots):
    """POST /paths/registered checks a path as POST /trials does (confined, the right kind, the hub and
    lm-eval grammars); the same kind and path again renames it; GET lists by kind and name; DELETE."""
    from api_helpers import API

    root = roots.resolve()
    made = client.post(f"{API}/paths/registered", json={"kind": "corpus", "name": "web-zh", "path": "corpus.txt"})
    assert made.status_code == 201, made.text
    corpus = made.json()
    assert (corpus["kind"], corpus["name"], corpus["path"], corpus["exists"]) == \
        ("corpus", "web-zh", str(root / "corpus.txt"), True)
    for body in ({"kind": "cmmlu", "name": "CMMLU dev", "path": str(roots / "bench" / "cmmlu")},
                 {"kind": "lm-eval", "name": "ARC easy", "path": "arc_easy"},
                 {"kind": "corpus", "name": "a hub corpus", "path": "hf:acme/web@v2:train"}):
        assert client.post(f"{API}/paths/registered", json=body).status_code == 201, body
    again = client.post(f"{API}/paths/registered", json={"kind": "corpus", "name": "web (zh)", "path": str(roots / "corpus.txt")})
    assert again.status_code == 200 and again.json()["id"] == corpus["id"] and again.json()["name"] == "web (zh)"
    listed = client.get(f"{API}/paths/registered").json()["data"]
    assert [(e["kind"], e["name"], e["path"], e["exists"]) for e in listed] == [
        ("cmmlu", "CMMLU dev", str(root / "bench" / "cmmlu"), True),
        ("corpus", "a hub corpus", "hf:acme/web@v2:train", None),
        ("corpus", "web (zh)", str(root / "corpus.txt"), True),
        ("lm-eval", "ARC easy", "arc_easy", None)]
    assert [e["name"] for e in client.get(f"{API}/paths/registered", params={"kind": "corpus"}).json()["data"]] == \
        ["a hub corpus", "web (zh)"]
    (roots / "corpus.txt").unlink()
    gone = {e["id"]: e for e in client.get(f"{API}/paths/registered").json()["data"]}[corpus["id"]]
    assert gone["exists"] is False  # still listed, no longer usable
    assert client.delete(f"{API}/paths/registered/{corpus['id']}").status_code == 204
    assert corpus["id"] not in {e["id"] for e in client.get(f"{API}/paths/registered").json()["data"]}
    assert client.delete(f"{API}/paths/registered/{corpus['id']}").status_code == 404


def test_a_path_that_cannot_be_registered_is_one_line(client, roots, tmp_path):
    from api_helpers import API

    for body, status, message in [
        ({"kind": "corpus", "name": "x", "path": "/etc/passwd"}, 400, "outside the allowed roots"),
        ({"kind": "corpus", "name": "x", "path": "missing.txt"}, 400, "does not exist"),
        ({"kind": "cmmlu", "name": "x", "path": "corpus.txt"}, 400, "is not a folder"),
        ({"kind": "corpus", "name": "x", "path": "hf:not a repo"}, 422, "not a hub dataset id"),
        ({"kind": "lm-eval", "name": "x", "path": "arc easy"}, 422, "not an lm-eval task name"),
        ({"kind": "mmlu", "name": "x", "path": "bench/cmmlu"}, 422, "kind"),
        ({"kind": "corpus", "name": "", "path": "corpus.txt"}, 422, "name"),
    ]:
        response = client.post(f"{API}/paths/registered", json=body)
        assert response.status_code == status, (body, response.text)
        detail = response.json()["detail"]
        assert message in detail and "\n" not in detail, (body, detail)
    assert client.get(f"{API}/paths/registered").json()["data"] == []


def test_registering_needs_a_token(make_client, roots):
    client = make_client(auth="token", secret_key="s" * 32)
    body = {"kind": "corpus", "name": "x", "path": str(roots / "corpus.txt")}
    assert client.post("/api/v1/paths/registered", json=body).status_code == 401
    assert client.get("/api/v1/paths/registered").status_code == 401
