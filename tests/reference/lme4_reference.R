# lme4's numbers for the score tables in this folder, for tests/test_analysis.py (CI has no R):
#   Rscript tests/reference/lme4_reference.R   (from the repository root; writes tests/reference/lme4_reference.json)
# The paper's model: score ~ wp + I(wp^2) + (1 | benchmark) with lmer's defaults. REML fit: fixed effects, SEs,
# t, the normal p-value 2*pnorm(-|t|) (lmer reports none; statsmodels reports this one), variance components,
# REML log-likelihood. ML fits of the full and the intercept-only model: the same, and anova()'s LRT.
suppressPackageStartupMessages({library(lme4); library(jsonlite)})

here <- "tests/reference"
terms <- c("(Intercept)" = "Intercept", "wp" = "wp", "I(wp^2)" = "I(wp ** 2)")  # statsmodels' term names

summarise <- function(fit) {
  coefs <- coef(summary(fit))
  variances <- as.data.frame(VarCorr(fit))
  list(terms = I(unname(terms[rownames(coefs)])), estimate = I(unname(coefs[, "Estimate"])),
       stderr = I(unname(coefs[, "Std. Error"])), t = I(unname(coefs[, "t value"])),
       p_value = I(unname(2 * pnorm(-abs(coefs[, "t value"])))),
       benchmark_variance = variances$vcov[variances$grp == "benchmark"],
       residual_variance = variances$vcov[variances$grp == "Residual"],
       loglik = as.numeric(logLik(fit)), n_observations = nobs(fit))
}

reference <- list(lme4_version = as.character(packageVersion("lme4")), r_version = R.version.string)
for (path in sort(Sys.glob(file.path(here, "*.csv")))) {
  data <- read.csv(path)
  full_reml <- lmer(score ~ wp + I(wp^2) + (1 | benchmark), data, REML = TRUE)
  full_ml <- lmer(score ~ wp + I(wp^2) + (1 | benchmark), data, REML = FALSE)
  null_ml <- lmer(score ~ 1 + (1 | benchmark), data, REML = FALSE)
  lrt <- anova(null_ml, full_ml)
  # as the paper would: anova() of the REML fits refits both by ML; it must agree with the ML fits above
  lrt_refit <- suppressMessages(anova(lmer(score ~ 1 + (1 | benchmark), data), full_reml))
  stopifnot(abs(lrt$Chisq[2] - lrt_refit$Chisq[2]) < 1e-6 * lrt$Chisq[2])
  reference$datasets[[sub("\\.csv$", "", basename(path))]] <- list(
    reml = summarise(full_reml), ml = summarise(full_ml), null_ml = summarise(null_ml),
    lrt_statistic = lrt$Chisq[2], lrt_df = lrt$Df[2], lrt_p_value = lrt[["Pr(>Chisq)"]][2])
}
write_json(reference, file.path(here, "lme4_reference.json"), digits = NA, auto_unbox = TRUE, pretty = TRUE)
