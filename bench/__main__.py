"""`python -m bench` (what `make bench` runs); `python -m bench fleet ...` for fleet rollouts;
`python -m bench directory ...` for the directory reads; `python -m bench moves ...` for tenant
moves; `python -m bench drain ...` for a server's drain."""

import sys

if sys.argv[1:2] == ["fleet"]:
    from bench.fleet import main as fleet_main

    sys.exit(fleet_main(sys.argv[2:]))
if sys.argv[1:2] == ["directory"]:
    from bench.directory import main as directory_main

    sys.exit(directory_main(sys.argv[2:]))
if sys.argv[1:2] == ["drain"]:
    from bench.drain import main as drain_main

    sys.exit(drain_main(sys.argv[2:]))
if sys.argv[1:2] == ["moves"]:
    from bench.moves import main as moves_main

    sys.exit(moves_main(sys.argv[2:]))

from bench.run import main

sys.exit(main())
