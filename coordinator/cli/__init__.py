"""`hs`: every coordinator resource from a shell, as tables or JSON.

The commands are data (`command.py`, in the words of `declare.py`): each resource group in `commands/`
lists its verbs with their arguments and the API call they make; `parser.py` builds argparse from
them, `session.py` resolves uuid-or-name arguments (`names.py`) and sends the calls through
`coordinator.client`, `render.py` prints the answer, `config.py` finds the coordinator and `main.py`
ties them together. A unit test checks every call against the coordinator's own route declarations
(its OpenAPI document).
"""
