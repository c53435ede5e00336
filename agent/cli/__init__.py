"""The ``edge-agent`` command: ``edge-agent X`` lives in ``cli/X.py``.

Nothing outside this package imports it. ``main`` is the one console script:
it answers ``run``, ``status`` and ``metrics`` without the CLI framework and
hands everything else to the typer app.

===========  =============================================================
module       what it answers
===========  =============================================================
main         the console script and its fast paths
app          the typer app: every command's arguments and help
common       exit codes, ``fail``, ``load_site_or_exit``, the validate summary
site         ``validate``, ``config show``, ``schema``
status       ``status`` (table, JSON, watch) and ``metrics``
statustext   the plain-text status table (standard library only: fast)
read         ``read`` (commissioning, ``--raw``)
doctor       ``doctor``
listen       ``listen``: what reaches a broker, decoded
buffer       ``buffer stats|export|purge``
profile      ``profile list|show|diff|test``
vectors      ``profile test``: a profile's vectors through the driver's decoder
initsite     ``init`` (copy a sample site)
demo         ``demo`` and ``simulate``: the only module importing simulators
demo_broker  the demo's local broker (mosquitto, or amqtt)
===========  =============================================================
"""
