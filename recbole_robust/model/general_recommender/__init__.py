"""General (user-item) plugin recommenders, one per module (file name = model name lower-cased)."""
from recbole_robust.model.general_recommender.acae import ACAE
from recbole_robust.model.general_recommender.amr import AMR
from recbole_robust.model.general_recommender.apr import APR
from recbole_robust.model.general_recommender.bm3 import BM3
from recbole_robust.model.general_recommender.cae import CAE
from recbole_robust.model.general_recommender.dragon import DRAGON
from recbole_robust.model.general_recommender.dualgnn import DualGNN
from recbole_robust.model.general_recommender.freedom import FREEDOM
from recbole_robust.model.general_recommender.grcn import GRCN
from recbole_robust.model.general_recommender.lattice import LATTICE
from recbole_robust.model.general_recommender.layergcn import LayerGCN
from recbole_robust.model.general_recommender.mmgcn import MMGCN
from recbole_robust.model.general_recommender.selfcf import SelfCF
from recbole_robust.model.general_recommender.slmrec import SLMRec
from recbole_robust.model.general_recommender.vaegan import VAEGAN
from recbole_robust.model.general_recommender.vbpr import VBPR

__all__ = ["ACAE", "AMR", "APR", "BM3", "CAE", "DRAGON", "DualGNN", "FREEDOM", "GRCN", "LATTICE", "LayerGCN", "MMGCN", "SelfCF", "SLMRec", "VAEGAN", "VBPR"]
