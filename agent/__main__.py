"""``python -m agent``: the same as the ``edge-agent`` command."""

from agent.entry import main

main()
