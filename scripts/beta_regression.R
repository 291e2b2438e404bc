# The beta mixed model beside the linear one of Table 3, as the study's later version (arXiv 2401.13586v4) fits it:
#   score ~ wp + I(wp^2) + (1 | benchmark),  score ~ Beta(mu * phi, (1 - mu) * phi),  logit(mu) = the linear predictor,
# fitted by maximum likelihood with glmmTMB per dataset (pooled over models) and per (dataset, model), as the linear
# model is. Its likelihood-ratio test is against the intercept-only beta model (both ML); the critical weight is the
# vertex of the linear predictor (the logit is monotone, so it maximizes the fitted mean score too) within the trained
# PLW grid, else the grid end with the higher fitted score, as plw.analysis.critical_weight.
#
# Scores must be fractions in [0, 1] (collect_scores divides BLEU and chrF by 100). The beta distribution excludes 0
# and 1: a scope with a score of exactly 0 or 1 has all its n scores squeezed into (0, 1) by Smithson & Verkuilen's
# (2006) y' = (y * (n - 1) + 0.5) / n, n the number of scores in that fit, and the table flags it (`squeezed`).
#
# Debian's R has no Parquet reader, so the workflow (scripts/beta_regression.py) hands this script the primary scores as CSV
# (model, dataset, plw, seed, benchmark, wp, score) and turns its JSON table (one array per column) into Parquet:
#   Rscript scripts/beta_regression.R --scores SCORES.csv --wp-power 0.30103 --table TABLE.json --markdown TABLE.md
# Needs the R packages glmmTMB and jsonlite (Debian: apt-get install r-cran-glmmtmb r-cran-jsonlite; conda: envs/r.yaml).

suppressPackageStartupMessages({
  library(glmmTMB)
  library(jsonlite)
})

USAGE <- "usage: Rscript scripts/beta_regression.R --scores CSV --wp-power P --table JSON --markdown MD"
# glmmTMB's names of the fixed effects, as the linear model's table (statsmodels) names them
TERMS <- c("(Intercept)" = "Intercept", "wp" = "wp", "I(wp^2)" = "I(wp ** 2)")
FULL <- score ~ wp + I(wp^2) + (1 | benchmark)
NULL_MODEL <- score ~ 1 + (1 | benchmark)

parse_args <- function(args) {
  keys <- c("scores", "wp-power", "table", "markdown")
  names <- sub("^--", "", args[c(TRUE, FALSE)])
  if (length(args) != 2 * length(keys) || !setequal(names, keys)) stop(USAGE, call. = FALSE)
  values <- setNames(as.list(args[c(FALSE, TRUE)]), names)
  values[["wp-power"]] <- as.numeric(values[["wp-power"]])
  if (!is.finite(values[["wp-power"]]) || values[["wp-power"]] <= 0) stop("--wp-power must be a positive number")
  values
}

critical_weight <- function(b1, b2, power, low, high) {
  # lambda = (-b1 / (2 b2))^(1 / power) for a concave fit whose vertex lies within the trained wp; else the grid end
  # with the higher fitted score. Nothing is extrapolated beyond the PLW values that were trained.
  if (b2 < 0) {
    vertex <- -b1 / (2 * b2)
    if (low <= vertex && vertex <= high) return(list(plw = vertex^(1 / power), kind = "vertex"))
  }
  gain <- b1 * (high - low) + b2 * (high^2 - low^2)  # at the high end over the low end
  list(plw = (if (gain > 0) high else low)^(1 / power), kind = "grid end")
}

squeeze <- function(y) {
  # Smithson & Verkuilen (2006): (y (n - 1) + 0.5) / n maps [0, 1] into (0, 1), keeping the order of the scores
  n <- length(y)
  (y * (n - 1) + 0.5) / n
}

fit_beta <- function(formula, data) {
  # glmmTMB's fit with its warnings collected (they go to the table's note, not to stderr alone)
  problems <- character()
  fit <- withCallingHandlers(
    glmmTMB(formula, data = data, family = beta_family(link = "logit")),
    warning = function(warning) {
      problems <<- c(problems, conditionMessage(warning))
      invokeRestart("muffleWarning")
    })
  if (fit$fit$convergence != 0) problems <- c(problems, paste("the optimizer did not converge:", fit$fit$message))
  if (!isTRUE(fit$sdr$pdHess)) problems <- c(problems, "non-positive-definite Hessian")
  if (!is.finite(as.numeric(logLik(fit)))) stop("the log-likelihood is not finite")
  list(fit = fit, problems = unique(problems))
}

empty_row <- function(dataset, model, n, note) {
  data.frame(dataset = dataset, model = model, term = NA_character_, estimate = NA_real_, stderr = NA_real_,
             p_value = NA_real_, lrt_statistic = NA_real_, lrt_df = NA_integer_, lrt_p_value = NA_real_,
             critical_plw = NA_real_, critical_kind = NA_character_, n_observations = n, note = note,
             benchmark_variance = NA_real_, precision = NA_real_, loglik = NA_real_, null_loglik = NA_real_,
             squeezed = NA, stringsAsFactors = FALSE)
}

fit_scope <- function(data, dataset, model, power) {
  n <- nrow(data)
  plws <- length(unique(data$plw))
  if (plws < 3) {
    return(empty_row(dataset, model, n, sprintf(
      "not estimable: a quadratic in wp needs at least 3 PLW values; this scope has %d", plws)))
  }
  outside <- sum(data$score < 0 | data$score > 1)
  if (outside > 0) {
    return(empty_row(dataset, model, n, sprintf(
      "not estimable: %d of %d scores lie outside [0, 1]; the beta model needs fractions", outside, n)))
  }
  squeezed <- any(data$score == 0 | data$score == 1)
  if (squeezed) data$score <- squeeze(data$score)
  fits <- tryCatch(list(full = fit_beta(FULL, data), null = fit_beta(NULL_MODEL, data)),
                   error = function(error) conditionMessage(error))
  if (is.character(fits)) return(empty_row(dataset, model, n, paste("not estimable:", fits)))
  full <- fits$full$fit
  coefficients <- coef(summary(full))$cond
  b <- coefficients[, "Estimate"]
  loglik <- as.numeric(logLik(full))
  null_loglik <- as.numeric(logLik(fits$null$fit))
  lrt <- 2 * (loglik - null_loglik)
  df <- length(b) - 1L
  weight <- critical_weight(b[["wp"]], b[["I(wp^2)"]], power, min(data$wp), max(data$wp))
  problems <- c(sprintf("full model: %s", fits$full$problems), sprintf("intercept-only model: %s", fits$null$problems))
  note <- if (length(problems)) paste0(paste(problems, collapse = "; "), ": read the LRT and the critical PLW with care")
          else ""
  data.frame(dataset = dataset, model = model, term = unname(TERMS[rownames(coefficients)]), estimate = unname(b),
             stderr = unname(coefficients[, "Std. Error"]), p_value = unname(coefficients[, "Pr(>|z|)"]),
             lrt_statistic = lrt, lrt_df = df, lrt_p_value = pchisq(lrt, df, lower.tail = FALSE),
             critical_plw = weight$plw, critical_kind = weight$kind, n_observations = n, note = note,
             benchmark_variance = VarCorr(full)$cond$benchmark[1, 1], precision = sigma(full), loglik = loglik,
             null_loglik = null_loglik, squeezed = squeezed, stringsAsFactors = FALSE)
}

beta_table <- function(scores, power) {
  # one row per (scope, term): per dataset pooled over models, then per (dataset, model), as Table 3
  scopes <- list()
  for (dataset in sort(unique(scores$dataset), method = "radix")) {
    scopes[[length(scopes) + 1]] <- list(dataset = dataset, model = "pooled", rows = scores$dataset == dataset)
  }
  pairs <- unique(scores[order(scores$dataset, scores$model, method = "radix"), c("dataset", "model")])
  for (index in seq_len(nrow(pairs))) {
    scopes[[length(scopes) + 1]] <- list(dataset = pairs$dataset[index], model = pairs$model[index],
                                         rows = scores$dataset == pairs$dataset[index] &
                                           scores$model == pairs$model[index])
  }
  rows <- lapply(scopes, function(scope) fit_scope(scores[scope$rows, ], scope$dataset, scope$model, power))
  if (!length(rows)) return(empty_row("", "", 0L, "")[0, ])
  do.call(rbind, rows)
}

cell <- function(format, value) if (is.na(value)) "" else sprintf(format, value)

beta_markdown <- function(table, power) {
  lines <- c(
    "# Beta mixed-effects regression\n",
    paste0("`score ~ wp + I(wp^2)` with a random intercept per benchmark, the score beta-distributed with mean μ and ",
           "precision φ, logit(μ) the linear predictor, fitted by maximum likelihood with glmmTMB ",
           packageVersion("glmmTMB"), " (", R.version.string, "); wp = PLW^", power, ". The study's later model ",
           "(arXiv 2401.13586v4), beside the linear one of Table 3 (regression.md), on the same scores and scopes. ",
           "Estimates and σ² (the variance of the benchmark intercepts) are on the logit scale. p: Wald z test. ",
           "LRT: against the intercept-only beta model, both fitted by ML. The critical PLW maximizes the linear ",
           "predictor, and so the fitted score, within the trained PLW grid. Scores are fractions (BLEU and chrF ",
           "divided by 100); the evaluations that regression.md lists as missing are left out here too.\n"),
    "| dataset | model | term | estimate (logit) | SE | p | σ² benchmark | φ | LRT χ² (df) | LRT p | critical PLW |",
    "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
  notes <- character()
  scopes <- unique(table[, c("dataset", "model")])
  for (index in seq_len(nrow(scopes))) {
    dataset <- scopes$dataset[index]
    model <- scopes$model[index]
    fit <- table[table$dataset == dataset & table$model == model, ]
    first <- fit[1, ]
    if (is.na(first$term)) {
      lines <- c(lines, sprintf("| %s | %s | | | | | | | | | %s |", dataset, model, first$note))
      next
    }
    if (nzchar(first$note)) notes <- c(notes, sprintf("- %s, %s: %s.", dataset, model, first$note))
    if (isTRUE(first$squeezed)) {
      notes <- c(notes, sprintf(paste("- %s, %s: a score of 0 or 1, so all %d scores were squeezed into (0, 1) as",
                                      "(y·(n−1) + 0.5)/n, n = %d (Smithson & Verkuilen 2006)."),
                                dataset, model, first$n_observations, first$n_observations))
    }
    weight <- paste0(sprintf("%.4g", first$critical_plw), if (first$critical_kind == "grid end") " (grid end)" else "")
    for (row in seq_len(nrow(fit))) {
      fit_cells <- if (row == 1) {
        sprintf("%s | %s | %.2f (%d) | %s | %s", cell("%.3g", first$benchmark_variance), cell("%.3g", first$precision),
                first$lrt_statistic, first$lrt_df, cell("%.3g", first$lrt_p_value), weight)
      } else " | | | | "
      lines <- c(lines, sprintf("| %s | %s | %s | %.4f | %s | %s | %s |", dataset, model, fit$term[row],
                                fit$estimate[row], cell("%.4f", fit$stderr[row]), cell("%.3g", fit$p_value[row]),
                                fit_cells))
    }
  }
  if (!nrow(table)) lines <- c(lines, "\nNo primary score has a result: nothing to fit.")
  lines <- c(lines, paste("\nA grid-end critical PLW is the end of the trained PLW grid with the higher fitted score:",
                          "the fit has no maximum inside the grid, and nothing beyond it is extrapolated."))
  if (length(notes)) lines <- c(lines, "\n## Notes\n", notes)
  paste0(paste(lines, collapse = "\n"), "\n")
}

main <- function() {
  args <- parse_args(commandArgs(trailingOnly = TRUE))
  scores <- read.csv(args$scores, colClasses = c(model = "character", dataset = "character", benchmark = "character"),
                     na.strings = "")
  missing <- setdiff(c("model", "dataset", "plw", "benchmark", "wp", "score"), names(scores))
  if (length(missing)) stop(args$scores, " lacks the columns ", paste(missing, collapse = ", "))
  scores$benchmark <- factor(scores$benchmark)
  table <- beta_table(scores, args[["wp-power"]])
  markdown <- beta_markdown(table, args[["wp-power"]])
  # both written only once both are made; the workflow renames them into place
  write_json(table, args$table, dataframe = "columns", na = "null", digits = NA, always_decimal = TRUE)
  writeLines(markdown, args$markdown, sep = "", useBytes = TRUE)
  cat(markdown)
}

main()
