"""``srcube view``: a cube on a map in the browser, served from 127.0.0.1 (:mod:`.tiles` reads and draws the map's
tiles, :mod:`.server` serves them with the page in ``static/``)."""
