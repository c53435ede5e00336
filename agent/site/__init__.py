"""The site file: YAML in, a validated :class:`~agent.site.loader.Site` out. No device I/O.

"The YAML was refused" is answered here: every problem is collected and
reported as ``FILE:LINE: path: message``, at the line in the profile file when
the value came from a profile.

===========  ==============================================================
module       what it answers
===========  ==============================================================
source       YAML with ``file:line`` per key, ``${ENV}``, duplicate keys refused
models       pydantic models of a site file and of a profile (unknown keys refused)
loader       ``load_site``: profiles merged, drivers asked, every problem located;
             ``Site``, serial line capacity, secrets masked in problems
device       one device: its profile + the site's overrides, each change recorded
north        the ``north:`` destinations: blocks, credentials, sub-devices; secret files
analytics    the ``analytics:`` machines merged with their profiles' ``machine:`` blocks
profiles     profile lookup, ``extends`` chains, content hashes and pins
params       ``${param.X}`` values and safe expressions (no eval)
schema       JSON schemas of site files and profiles (``edge-agent schema``)
reference    the Markdown reference page, docs/SITE-REFERENCE.md (``schema --markdown``)
permissions  warnings for config or key files readable by others
===========  ==============================================================
"""
