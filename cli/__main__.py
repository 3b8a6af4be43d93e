"""python -m srcube.cli"""

from srcube.cli.app import main

main()
