"""`kent-together`: the platform's command line (installed into .venv by `make run`).

Each job has its module: running the suite (supervisor.py), tokens and keys (keys.py),
the services' data (data.py), the demo (demo_command.py) and the documents (docs.py).
"""

from __future__ import annotations

import typer

from suite import data, demo_command, docs, keys, supervisor

app = typer.Typer(help="Kent Together platform commands.", no_args_is_help=True, add_completion=False)

app.command()(keys.token)
app.command()(keys.keygen)
app.command()(supervisor.migrate)
app.command()(supervisor.relay)
app.command()(supervisor.run)
app.command("anonymise-expired")(data.anonymise_expired)
app.command("import-referrals")(data.import_referrals)
app.command()(keys.rekey)
app.command()(docs.docs)
app.command("create-topics")(supervisor.create_topics)
app.command("topics-manifest")(supervisor.topics_manifest)
app.command()(data.replay)
app.command()(data.republish)
app.command("import-actions")(data.import_actions)
app.command()(demo_command.demo)
app.command("replay-dead-letters")(data.replay_dead_letters_command)

if __name__ == "__main__":
    app()
