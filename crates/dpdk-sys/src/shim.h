/* DPDK's fast-path functions are static inline in its headers, so they have
 * no symbol to bind: this shim gives each one a linkable wrapper. */
#ifndef BFTD_DPDK_SHIM_H
#define BFTD_DPDK_SHIM_H

#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

uint16_t bftd_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
                               struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t bftd_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
                               struct rte_mbuf **tx_pkts, uint16_t nb_pkts);
struct rte_mbuf *bftd_rte_pktmbuf_alloc(struct rte_mempool *mp);
void bftd_rte_pktmbuf_free(struct rte_mbuf *m);
char *bftd_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
void *bftd_rte_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t bftd_rte_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t bftd_rte_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t bftd_rte_pktmbuf_nb_segs(const struct rte_mbuf *m);
int bftd_rte_errno(void);

#endif
