"""The research study behind docs/study.md: does the seed's VQ collapse happen here, and why?

Not part of the installed product (model/ and search/): the study uses the tool as a user
would, through the repository's scripts, configs and spaces.

    study/protocol.py   what each stage runs: configs, spaces, seeds, epochs, folders
    study/common.py     what stages share: many training runs, a run's summary, plots
    study/collapse.py   does the collapse happen here? collapse, confirm, calibrate, rankcorr
    study/fix.py        the answer and its controls: main, production, reference, unquantized, fixes, searches
    study/start.py      the seed's starting state: start
    study/doc.py        docs/study.md from the summaries (imports only what it renders)
    study/stages.py     the stage list (once) and run_stage
"""
