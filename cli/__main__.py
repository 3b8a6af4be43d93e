"""python -m srcube.cli"""

from srcube.cli.commands import main

main()
