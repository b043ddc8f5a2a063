"""Rule fit_normalization: PCA/whitening and the score-normalization bank of one model, fitted
on its training embeddings (or a sample of the reference shards when there is no training set)."""

import logging
import time

from copydetect.rule_script import start


def main() -> None:
    from copydetect.memory import peak_rss_mib
    from copydetect.normalization import (
        NormalizationParams,
        fit_normalization,
        write_normalization,
    )

    begin = time.perf_counter()
    params = NormalizationParams.from_mapping(snakemake.params.normalization)
    shards = list(snakemake.input.embeddings)
    logging.info("%d embedding shards, %s", len(shards), params)
    normalization = fit_normalization(shards, params)
    write_normalization(snakemake.output.normalization, normalization)
    logging.info(
        "fitted on %d vectors, dim %d -> %d, bank of %d, %.1f s, peak RSS %.0f MiB",
        normalization.n_fit,
        normalization.input_dim,
        normalization.output_dim,
        len(normalization.bank),
        time.perf_counter() - begin,
        peak_rss_mib(),
    )


start(snakemake)
main()
