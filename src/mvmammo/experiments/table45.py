"""Tables 4 and 5 of Wu et al. (MIDL 2020, Appendix C): gradient blending weights and their ablation.

Command: `mvmammo experiment table45 --out runs/table45` (CPU scale, synthetic `paper` cohort, table1.BASE).
Every seed first gets its own offline estimate (three models on train minus V, V = 10% of the training
patients, 7 epochs: table1.BASE's whole schedule), triggered by its first blended run, in <out>/gblend_estimate-s<seed>/. Then:

  Table 4 (the estimated weights w_joint, w_cc, w_mlo, mean +- std over seeds, from loss or from
  malignant AUC over the windows [0, 7] and [5, 7], as the paper's [0, 100] and [90, 100]):
      mvmammo blend-table runs/table45/gblend_estimate-s*
  Table 5 (test AUC of Joint + gradient blending trained with equal weights, the loss estimate, the loss
  estimate with CC and MLO swapped, the AUC estimate and it swapped; [0, 7] window): printed by the
  experiment command, or `mvmammo table runs/table45/gblend_*-s*`; the weights each row used:
      mvmammo blend-table runs/table45/gblend_*-s[0-9]

The paper (NYU data): weights (joint, cc, mlo) loss [0, 100] 0.367/0.300/0.333, loss [90, 100]
0.373/0.286/0.341, AUC [0, 100] 0.319/0.398/0.283, AUC [90, 100] 0.446/0.498/0.056 (sic); no significant
AUC differences between the weightings, equal weights best.
"""
from mvmammo.experiments import Experiment, Row
from mvmammo.experiments.table1 import BASE, EXPERIMENT as TABLE1

ESTIMATE = "reg.blend_weights_file={out}/gblend_estimate-s{seed}/blend_weights.json"

EXPERIMENT = Experiment(
    name="table45",
    reproduces="Tables 4-5 (gradient blending weights and their ablation)",
    command="mvmammo experiment table45 --out runs/table45",
    preset="default",
    overrides=BASE + ("model.family=joint", "model.aux_heads=true", "reg.blend_epochs=(0, 7)",
                      "reg.blend_holdout=0.1"),
    rows=(
        Row("gblend_equal", ("reg.blend=fixed", "reg.blend_weights=(1, 1, 1)")),
        Row("gblend_loss", ("reg.blend=offline", ESTIMATE, "reg.blend_metric=loss")),
        Row("gblend_loss_swapped", ("reg.blend=offline", ESTIMATE, "reg.blend_metric=loss",
                                    "reg.blend_swap_views=true")),
        Row("gblend_auc", ("reg.blend=offline", ESTIMATE, "reg.blend_metric=auc")),
        Row("gblend_auc_swapped", ("reg.blend=offline", ESTIMATE, "reg.blend_metric=auc",
                                   "reg.blend_swap_views=true")),
    ),
    quick_overrides=TABLE1.quick_overrides + ("reg.blend_epochs=(0, 3)",),
    expected="no clear AUC differences between the weightings (as the paper); the weights vary by seed",
    notes=["Table 4: `mvmammo blend-table <out>/gblend_estimate-s*`"],
)
