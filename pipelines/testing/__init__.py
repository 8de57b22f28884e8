"""Test tooling shared by tests/, bench/ and scripts/ (importable like the rest of `pipelines`, so Ray workers and
scripts need no path set-up). Never imported by a stage or by the pipeline itself.

    helpers.py   run one stage's run() in-process on real Ray, from upstream datasets built out of tables
    realtext.py  real Chinese documents: the quickstart's sample site (Debian's Chinese documentation), extracted
    httpsite.py  a real HTTP site on a loopback address (crawl tests, bench/crawl.py)
    legacy_site.py  the sample site re-encoded in GB18030 / GBK / Big5, declared four ways (issue 15)
    stagekit.py  test-only stages (gen -> upper -> count) that exercise the runner, registered by a config's
                 `plugins: [pipelines.testing.stagekit]`
    ceiling.py   the machine's own scaling ceiling, which the benchmarks print a stage's speed-up beside
"""
