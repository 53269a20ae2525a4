try:
    from meshca.cli.main import main

    code = main()
except KeyboardInterrupt:
    # Ctrl-C while Python was still loading meshca, before `serve` handles the signal itself:
    # nothing is bound or spawned yet, so end quietly with the shell's code for SIGINT.
    code = 130

raise SystemExit(code)
