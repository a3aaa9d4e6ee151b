"""The run viewer: what ``runarchive ui`` serves and ``report.html`` shows.

:mod:`.data` turns runs, indexes, records and verification reports into plain JSON
values (pure functions); :mod:`.render` embeds them, escaped, in the one hand-written
page shipped beside it (``page.html``), which draws them with ``textContent`` only.
"""
