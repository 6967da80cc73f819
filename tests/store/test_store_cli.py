"""`rlhfv annotate import | export | users` through rlhfv.cli.main, as a user types them."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rlhfv.cli import main
from rlhfv.data.preference import read_preferences
from rlhfv.store.store import Store


def test_users_import_label_and_export_from_the_command_line(
    tmp_path: Path, database_url, monkeypatch, capsys
):
    db = database_url
    monkeypatch.chdir(tmp_path)  # a PostgreSQL store keeps its images in ./rlhfv_annotate/media
    monkeypatch.setattr("sys.stdin", io.StringIO("ann-password\n"))
    assert main(["annotate", "users", "add", "ann", "--password-stdin", "--db", db]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("other-password\n"))
    assert main(["annotate", "users", "add", "ann", "--password-stdin", "--db", db]) == 2
    assert "already exists" in capsys.readouterr().err
    rows = [{"prompt": "p", "responses": ["good", "bad"]}, {"prompt": "q"}]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (
        main(["annotate", "import", "jsonl", str(tmp_path / "tasks.jsonl"), "--overlap", "1", "--db", db])
        == 0
    )
    out = capsys.readouterr().out
    assert "added 1 tasks" in out and "tasks.jsonl:2: field 'responses'" in out
    assert main(["annotate", "import", "shapes", "--n", "2", "--db", db]) == 0
    assert main(["annotate", "import", "rollouts", str(tmp_path / "no-such-run"), "--db", db]) == 2
    assert "no rollouts.jsonl" in capsys.readouterr().err
    store = Store(db)
    ann = store.authenticate("ann", "ann-password")
    while (view := store.next_task(ann.id)) is not None:
        good = view.responses.index("good") if "good" in view.responses else 0
        store.submit(ann.id, view.id, [0 if i == good else 1 for i in range(2)])
    out_dir = tmp_path / "exports"
    assert main(["annotate", "export", "--out", str(out_dir), "--db", db]) == 0
    assert "snapshot v1: 3 pairs from 3 labels" in capsys.readouterr().out
    prefs, _ = read_preferences(out_dir / "v1" / "preferences.jsonl")
    assert {"good", "bad"} == set(next(p for p in prefs if p.prompt == "p").responses)
    monkeypatch.setattr("sys.stdin", io.StringIO("new-password\n"))
    assert main(["annotate", "users", "passwd", "ann", "--password-stdin", "--db", db]) == 0
    assert main(["annotate", "users", "disable", "ann", "--db", db]) == 0
    assert main(["annotate", "users", "list", "--db", db]) == 0
    assert "disabled" in capsys.readouterr().out
    assert Store(db).authenticate("ann", "new-password") is None
    assert main(["annotate", "users", "enable", "ann", "--db", db]) == 0
    assert Store(db).authenticate("ann", "new-password") is not None


def test_the_cli_exports_by_default_where_the_app_does(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("RLHFV_EXPORTS", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working folder must not matter
    db = tmp_path / "data" / "store.db"
    store = Store(db)
    assert main(["annotate", "export", "--db", str(db)]) == 0
    # The app's Export page writes to exports/ beside the media folder (annotation_ui.ui_admin.exports_root).
    assert (store.media_dir.parent / "exports" / "v1" / "manifest.json").is_file()
    assert not any(elsewhere.iterdir())
