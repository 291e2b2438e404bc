# glmmTMB's own numbers for beta_scores.csv, for tests/test_beta_regression.py, made without scripts/beta_regression.R:
#   Rscript tests/reference/beta/glmmtmb_reference.R   (from the repository root; writes glmmtmb_reference.json)
# Per dataset, pooled over models and per model: glmmTMB(score ~ wp + I(wp^2) + (1 | benchmark), beta_family()) and
# the intercept-only model by ML, the fixed effects (estimate, SE, Wald p), the variance of the benchmark
# intercepts, the precision, the log-likelihoods, and anova()'s likelihood-ratio test. A scope with a score of 0
# or 1 has its n scores squeezed first, (y (n - 1) + 0.5) / n (Smithson & Verkuilen 2006).
suppressPackageStartupMessages({library(glmmTMB); library(jsonlite)})

here <- "tests/reference/beta"
terms <- c("(Intercept)" = "Intercept", "wp" = "wp", "I(wp^2)" = "I(wp ** 2)")  # the workflow's term names

summarise <- function(data) {
  squeezed <- any(data$score %in% c(0, 1))
  if (squeezed) data$score <- (data$score * (nrow(data) - 1) + 0.5) / nrow(data)
  full <- glmmTMB(score ~ wp + I(wp^2) + (1 | benchmark), data, family = beta_family())
  null <- glmmTMB(score ~ 1 + (1 | benchmark), data, family = beta_family())
  lrt <- anova(null, full)
  coefs <- coef(summary(full))$cond
  list(terms = I(unname(terms[rownames(coefs)])), estimate = I(unname(coefs[, "Estimate"])),
       stderr = I(unname(coefs[, "Std. Error"])), p_value = I(unname(coefs[, "Pr(>|z|)"])),
       benchmark_variance = VarCorr(full)$cond$benchmark[1, 1], precision = sigma(full),
       loglik = as.numeric(logLik(full)), null_loglik = as.numeric(logLik(null)),
       lrt_statistic = lrt$Chisq[2], lrt_df = lrt[["Chi Df"]][2], lrt_p_value = lrt[["Pr(>Chisq)"]][2],
       n_observations = nrow(data), squeezed = squeezed)
}

scores <- read.csv(file.path(here, "beta_scores.csv"), colClasses = c(model = "character", benchmark = "character"))
scores$benchmark <- factor(scores$benchmark)
reference <- list(glmmTMB_version = as.character(packageVersion("glmmTMB")), r_version = R.version.string)
for (dataset in unique(scores$dataset)) {
  data <- scores[scores$dataset == dataset, ]
  fits <- list(pooled = summarise(data))
  for (model in unique(data$model)) fits[[model]] <- summarise(data[data$model == model, ])
  reference$datasets[[dataset]] <- fits
}
write_json(reference, file.path(here, "glmmtmb_reference.json"), digits = NA, auto_unbox = TRUE, pretty = TRUE)
